# ctest -R install_consumer: install the build tree into a private prefix, then
# configure, build and run tests/consumer against it with find_package.
set(root ${NPID_BINARY_DIR}/_consumer)
file(REMOVE_RECURSE ${root})
function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  message("${out}")
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "command failed (${rc}): ${ARGN}\n${err}")
  endif()
endfunction()
run(${CMAKE_COMMAND} --install ${NPID_BINARY_DIR} --prefix ${root}/prefix)
run(${CMAKE_COMMAND} -S ${CONSUMER_SOURCE_DIR} -B ${root}/build -G ${GENERATOR}
    -DCMAKE_PREFIX_PATH=${root}/prefix -DCMAKE_BUILD_TYPE=Release)
run(${CMAKE_COMMAND} --build ${root}/build)
run(${root}/build/consumer)
