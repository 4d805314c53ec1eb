"""The built-in methods: one module (or, for a method of several files, one sub-package) per registered
name; :mod:`lwbench.methods.common` holds the parts several methods share. :mod:`lwbench.registry`
imports every module here on first use."""
