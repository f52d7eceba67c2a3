"""Test doubles that behave like the real interfaces: a powercap sysfs tree, an NVML module."""
