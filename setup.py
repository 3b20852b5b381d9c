"""Only what pyproject.toml cannot say: the package list is found, plus the two data packages
that [tool.setuptools.package-dir] maps onto the checkout's rules/ and models/."""

from setuptools import find_packages, setup

SHIPPED = ["gateway._shipped.rules", "gateway._shipped.models"]

setup(packages=[*find_packages(include=["gateway*", "training*"]), *SHIPPED])
