// common/hostdevice.h -- NPID_HD marks functions shared verbatim by the CUDA
// kernels and their CPU references, so both compute one contract.
#pragma once

#if defined(__CUDACC__)
#define NPID_HD __host__ __device__ __forceinline__
#else
#define NPID_HD inline
#endif
