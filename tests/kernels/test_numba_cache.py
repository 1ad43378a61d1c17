"""``kernels.numba_cache``: a compiled loop's cache is stamped with every source under its root,
so editing a file it inlines from (another module) compiles it again."""

from pathlib import Path

from ganglion.kernels import numba_cache
from ganglion.kernels.conv.scan_pool import conv_scan_pool_loop
from ganglion.kernels.scan_loops import float_scan_loop


def test_ganglions_loops_are_stamped_with_their_roots_sources():
    for loop in (float_scan_loop, conv_scan_pool_loop):
        locator = loop._cache._impl.locator
        assert isinstance(locator, numba_cache._RootStamp)
        own, digest = locator.get_source_stamp()
        assert digest == numba_cache.sources_digest(numba_cache.SOURCE_ROOTS[0])


def test_the_digest_follows_any_file_under_the_root(tmp_path: Path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "sub" / "b.py").write_text("y = 2\n")
    first = numba_cache.sources_digest.__wrapped__(tmp_path)
    (tmp_path / "sub" / "b.py").write_text("y = 3\n")  # the file the loop inlines from
    assert numba_cache.sources_digest.__wrapped__(tmp_path) != first
