# Small helpers shared by the library, tests, benchmarks and examples.
find_package(Threads REQUIRED)

# -Wall -Wextra on host code (C++ sources and nvcc's host pass).
function(npid_set_warnings target)
  set(flags -Wall -Wextra)
  if(NPID_WERROR)
    list(APPEND flags -Werror)
  endif()
  list(JOIN flags "," cuda_flags)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CXX>:${flags}>
    $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=${cuda_flags}>)
endfunction()
