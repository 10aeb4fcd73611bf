// The CPU's fp32 FMA throughput, measured: the denominator of MFU. A nominal "cores x lanes x
// clock" figure is wrong on machines whose clock boosts past what they report (VMs report the
// base clock), which makes MFU read above 100%.
#pragma once

namespace lyre::cpu {

// FLOP/s of `threads` threads each running independent fused multiply-adds on the widest vector
// unit (AVX-512 where present, else AVX2), best of a few ~20 ms runs. Cached per thread count.
double measured_peak_flops(int threads);

}  // namespace lyre::cpu
