"""Map each top-level folder to the ``ganglion.<folder>`` namespace (see pyproject.toml)."""

from setuptools import find_packages, setup

FOLDERS = ["runtime", "models", "converters", "device", "kernels"]

packages: list[str] = []
package_dir: dict[str, str] = {}
for folder in FOLDERS:
    package_dir[f"ganglion.{folder}"] = folder
    packages += [f"ganglion.{folder}"] + [f"ganglion.{folder}.{p}" for p in find_packages(folder)]

setup(packages=packages, package_dir=package_dir)
