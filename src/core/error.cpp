// Error construction and the status-to-exception helpers behind check.h.
#include "npid/error.h"

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>
#include <curand.h>

#include <string>

#include "core/check.h"

namespace npid {

const char* to_string(ErrorKind kind) noexcept {
  switch (kind) {
    case ErrorKind::kInvalidArgument: return "invalid argument";
    case ErrorKind::kUnsupported: return "unsupported";
    case ErrorKind::kCuda: return "CUDA error";
    case ErrorKind::kCublas: return "cuBLAS error";
    case ErrorKind::kCudnn: return "cuDNN error";
    case ErrorKind::kCurand: return "cuRAND error";
    case ErrorKind::kNoDevice: return "no CUDA device";
    case ErrorKind::kIo: return "I/O error";
    case ErrorKind::kInternal: return "internal error";
  }
  return "error";
}

namespace {
std::string location(const char* file, int line) {
  if (file == nullptr) return {};
  return std::string(file) + ":" + std::to_string(line);
}
}  // namespace

Error::Error(ErrorKind kind, std::string message, const char* file, int line)
    : std::runtime_error(std::move(message)),
      kind_(kind),
      where_(location(file, line)) {}

namespace detail {

void throw_invalid_argument(const char* op, const char* arg,
                            const std::string& detail, const char* file,
                            int line) {
  std::string msg = std::string(op) + ": argument '" + arg + "': " + detail;
  throw Error(ErrorKind::kInvalidArgument, std::move(msg), file, line);
}

namespace {
[[noreturn]] void throw_status(ErrorKind kind, const char* library,
                               const char* expr, const char* file, int line,
                               const std::string& reason) {
  std::string msg = std::string(library) + " call '" + expr + "' failed at " +
                    location(file, line) + ": " + reason;
  throw Error(kind, std::move(msg), file, line);
}

const char* curand_status_name(curandStatus_t s) {
  switch (s) {
    case CURAND_STATUS_SUCCESS: return "CURAND_STATUS_SUCCESS";
    case CURAND_STATUS_VERSION_MISMATCH: return "CURAND_STATUS_VERSION_MISMATCH";
    case CURAND_STATUS_NOT_INITIALIZED: return "CURAND_STATUS_NOT_INITIALIZED";
    case CURAND_STATUS_ALLOCATION_FAILED: return "CURAND_STATUS_ALLOCATION_FAILED";
    case CURAND_STATUS_TYPE_ERROR: return "CURAND_STATUS_TYPE_ERROR";
    case CURAND_STATUS_OUT_OF_RANGE: return "CURAND_STATUS_OUT_OF_RANGE";
    case CURAND_STATUS_LENGTH_NOT_MULTIPLE: return "CURAND_STATUS_LENGTH_NOT_MULTIPLE";
    case CURAND_STATUS_DOUBLE_PRECISION_REQUIRED: return "CURAND_STATUS_DOUBLE_PRECISION_REQUIRED";
    case CURAND_STATUS_LAUNCH_FAILURE: return "CURAND_STATUS_LAUNCH_FAILURE";
    case CURAND_STATUS_PREEXISTING_FAILURE: return "CURAND_STATUS_PREEXISTING_FAILURE";
    case CURAND_STATUS_INITIALIZATION_FAILED: return "CURAND_STATUS_INITIALIZATION_FAILED";
    case CURAND_STATUS_ARCH_MISMATCH: return "CURAND_STATUS_ARCH_MISMATCH";
    case CURAND_STATUS_INTERNAL_ERROR: return "CURAND_STATUS_INTERNAL_ERROR";
  }
  return "unknown curandStatus_t";
}
}  // namespace

void throw_cuda(int status, const char* expr, const char* file, int line) {
  const auto err = static_cast<cudaError_t>(status);
  throw_status(ErrorKind::kCuda, "CUDA", expr, file, line,
               std::string(cudaGetErrorString(err)) + " (" +
                   cudaGetErrorName(err) + ")");
}

void throw_cublas(int status, const char* expr, const char* file, int line) {
  const auto st = static_cast<cublasStatus_t>(status);
  throw_status(ErrorKind::kCublas, "cuBLAS", expr, file, line,
               std::string(cublasGetStatusString(st)) + " (" +
                   cublasGetStatusName(st) + ")");
}

void throw_cudnn(int status, const char* expr, const char* file, int line) {
  const auto st = static_cast<cudnnStatus_t>(status);
  throw_status(ErrorKind::kCudnn, "cuDNN", expr, file, line,
               cudnnGetErrorString(st));
}

void throw_curand(int status, const char* expr, const char* file, int line) {
  throw_status(ErrorKind::kCurand, "cuRAND", expr, file, line,
               curand_status_name(static_cast<curandStatus_t>(status)));
}

}  // namespace detail
}  // namespace npid
