"""tegrastats lines as printed by Orin (JetPack 5 and 6), Xavier and Nano (JetPack 4)."""

import pytest

from ganglion.device.tegrastats import parse_tegrastats

ORIN_AGX_JP5 = (
    "08-22-2023 13:47:06 RAM 3424/30536MB (lfb 6189x4MB) SWAP 0/15268MB (cached 0MB) "
    "CPU [0%@729,12%@729,0%@729,0%@729,3%@729,0%@729,0%@729,0%@729,off,off,off,off] "
    "EMC_FREQ 0%@204 GR3D_FREQ 7%@[305,305] VIC_FREQ 115 APE 174 CV0@-256C CPU@44.093C "
    "Tboard@32C SOC2@40.843C Tdiode@33.25C SOC0@41.062C CV1@-256C GPU@-256C tj@44.093C "
    "SOC1@41.25C CV2@-256C VDD_GPU_SOC 2390mW/2390mW VDD_CPU_CV 796mW/796mW "
    "VIN_SYS_5V0 3522mW/3522mW NC 0mW/0mW VDDQ_VDD2_1V8AO 301mW/301mW NC 0mW/0mW"
)
ORIN_NANO_JP6 = (
    "11-14-2024 10:21:33 RAM 1897/7620MB (lfb 5x4MB) SWAP 0/3810MB (cached 0MB) "
    "CPU [1%@1510,0%@1510,0%@1510,0%@1510,0%@729,0%@729] GR3D_FREQ 0% cpu@47.281C "
    "soc2@46.343C soc0@46.406C gpu@47.968C tj@47.968C soc1@46.093C "
    "VDD_IN 4736mW/4700mW VDD_CPU_GPU_CV 557mW/557mW VDD_SOC 1435mW/1435mW"
)
XAVIER_JP4 = (
    "RAM 1817/31919MB (lfb 6956x4MB) SWAP 0/15959MB (cached 0MB) "
    "CPU [1%@1190,0%@1190,0%@1190,0%@1190,off,off,off,off] EMC_FREQ 0%@2133 "
    "GR3D_FREQ 0%@1377 APE 150 MTS fg 0% bg 0% AO@37.5C GPU@37C Tdiode@39.75C PMIC@50C "
    "AUX@36.5C CPU@37.5C thermal@37.2C Tboard@36C GPU 0/0 CPU 311/311 SOC 1243/1243 CV 0/0 "
    "VDDRQ 155/155 SYS5V 1410/1410"
)
NANO_JP4 = (
    "RAM 1565/3964MB (lfb 237x4MB) SWAP 0/1982MB (cached 0MB) IRAM 0/252kB(lfb 252kB) "
    "CPU [4%@1479,2%@1479,2%@1479,1%@1479] EMC_FREQ 2%@1600 GR3D_FREQ 0%@921 APE 25 "
    "PLL@33C CPU@35.5C PMIC@100C GPU@33.5C AO@42.5C thermal@34.25C "
    "POM_5V_IN 2211/2000 POM_5V_GPU 0/0 POM_5V_CPU 442/442"
)


def test_orin_agx_line_sums_rails_without_vdd_in():
    s = parse_tegrastats(ORIN_AGX_JP5)
    assert (s.ram_used_mb, s.ram_total_mb) == (3424, 30536)
    assert s.cpu_load_pct[:2] == [0.0, 12.0] and s.cpu_load_pct[-1] is None
    assert s.cpu_freq_mhz[0] == 729 and len(s.cpu_freq_mhz) == 12
    assert s.gpu_load_pct == 7.0 and s.gpu_freq_mhz == [305, 305]
    assert s.temperatures_c["tj"] == pytest.approx(44.093)
    assert "NC" not in s.rails_mw and "RAM" not in s.rails_mw
    assert s.rails_mw["VDD_GPU_SOC"] == (2390.0, 2390.0)
    assert s.total_rail is None
    assert s.power_w == pytest.approx((2390 + 796 + 3522 + 301) / 1000)


def test_orin_nano_jp6_line_uses_vdd_in():
    s = parse_tegrastats(ORIN_NANO_JP6)
    assert s.total_rail == "VDD_IN"
    assert s.rails_mw["VDD_IN"] == (4736.0, 4700.0)
    assert s.power_w == pytest.approx(4.736)
    assert s.gpu_load_pct == 0.0 and s.gpu_freq_mhz == []
    assert s.temperatures_c["gpu"] == pytest.approx(47.968)


def test_xavier_line_has_rails_without_units():
    s = parse_tegrastats(XAVIER_JP4)
    assert s.rails_mw == {
        "GPU": (0.0, 0.0),
        "CPU": (311.0, 311.0),
        "SOC": (1243.0, 1243.0),
        "CV": (0.0, 0.0),
        "VDDRQ": (155.0, 155.0),
        "SYS5V": (1410.0, 1410.0),
    }
    assert s.temperatures_c["GPU"] == 37.0
    assert s.gpu_freq_mhz == [1377]


def test_nano_line_uses_pom_5v_in():
    s = parse_tegrastats(NANO_JP4)
    assert s.total_rail == "POM_5V_IN"
    assert s.power_w == pytest.approx(2.211)
    assert "IRAM" not in s.rails_mw
    assert s.cpu_load_pct == [4.0, 2.0, 2.0, 1.0]


def test_a_line_that_is_not_tegrastats_is_refused():
    with pytest.raises(ValueError, match="not a tegrastats line"):
        parse_tegrastats("Segmentation fault (core dumped)")
