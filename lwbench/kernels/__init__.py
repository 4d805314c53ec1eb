"""Kernels: the device-side sparse operators everything above them uses (graph propagation, a binary
user-item matrix for gathers and membership tests). They import nothing else of lwbench, so the plugin
contract, evaluation, training and the methods can all stand on them without an import running back up."""
