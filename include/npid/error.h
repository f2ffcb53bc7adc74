// npid/error.h -- the library's one error type.
//
// Every failure surfaces as an npid::Error: a bad argument (which argument,
// what was expected, what came), a failed CUDA / cuBLAS / cuDNN / cuRAND call
// (the call, file:line, the library's own error string), an unsupported
// configuration, or an I/O problem. Nothing in the library calls exit() or
// aborts; destructors never throw.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace npid {

enum class ErrorKind {
  kInvalidArgument,  // a caller's argument violates the documented contract
  kUnsupported,      // valid request this build / device cannot serve
  kCuda,             // CUDA runtime call or kernel launch failed
  kCublas,
  kCudnn,
  kCurand,
  kNoDevice,         // a CUDA context was requested where there is no device
  kIo,
  kInternal,
};

const char* to_string(ErrorKind kind) noexcept;

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, std::string message, const char* file = nullptr,
        int line = 0);

  ErrorKind kind() const noexcept { return kind_; }
  // Source location of the check that fired ("" when unknown).
  const std::string& where() const noexcept { return where_; }

 private:
  ErrorKind kind_;
  std::string where_;
};

namespace detail {
[[noreturn]] void throw_invalid_argument(const char* op, const char* arg,
                                         const std::string& detail,
                                         const char* file, int line);
}  // namespace detail

}  // namespace npid

// Argument check used by every checked entry point. `what` is streamed, so
//   NPID_CHECK_ARG(k > 0, "nce_forward_backward", "num_negatives",
//                  "expected > 0, got " << k);
// produces "nce_forward_backward: argument 'num_negatives': expected > 0, got 0".
#define NPID_CHECK_ARG(cond, op, arg, what)                                  \
  do {                                                                       \
    if (!(cond)) {                                                           \
      std::ostringstream npid_check_arg_os_;                                 \
      npid_check_arg_os_ << what;                                            \
      ::npid::detail::throw_invalid_argument(op, arg, npid_check_arg_os_.str(), \
                                             __FILE__, __LINE__);            \
    }                                                                        \
  } while (0)
