# cmake -P script: builds examples/template_backend against an installed moert
# and loads it through MOERT_BACKEND_PATH.
#
# Inputs (-D): MOERT_BUILD_DIR, TEMPLATE_SOURCE_DIR, WORK_DIR, SMOKE (the
# template_smoke program), GENERATOR, C_COMPILER.

foreach(var MOERT_BUILD_DIR TEMPLATE_SOURCE_DIR WORK_DIR SMOKE GENERATOR)
  if(NOT DEFINED ${var} OR "${${var}}" STREQUAL "")
    message(FATAL_ERROR "template_out_of_tree.cmake: ${var} is not set")
  endif()
endforeach()

# run(<step> <command>...): runs a command, fails the test with its output.
function(run step)
  execute_process(COMMAND ${ARGN}
    RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${step} failed (exit ${rc}):\n  ${ARGN}\n${out}")
  endif()
  message(STATUS "${step}: ok")
  set(last_output "${out}" PARENT_SCOPE)
endfunction()

set(prefix ${WORK_DIR}/prefix)
set(build ${WORK_DIR}/build)
file(REMOVE_RECURSE ${WORK_DIR})
file(MAKE_DIRECTORY ${WORK_DIR})

run("install moert into ${prefix}"
  ${CMAKE_COMMAND} --install ${MOERT_BUILD_DIR} --prefix ${prefix})

if(NOT EXISTS ${prefix}/include/moert/backend_abi.h)
  message(FATAL_ERROR "the install has no include/moert/backend_abi.h under ${prefix}")
endif()

set(configure_args -S ${TEMPLATE_SOURCE_DIR} -B ${build} -G ${GENERATOR}
  -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_BUILD_TYPE=Release
  # Only the prefix: a moert installed elsewhere on the machine must not
  # satisfy find_package and hide a broken install.
  -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF -DCMAKE_FIND_USE_SYSTEM_PACKAGE_REGISTRY=OFF
  "-DCMAKE_C_FLAGS=-Werror")
if(C_COMPILER)
  list(APPEND configure_args -DCMAKE_C_COMPILER=${C_COMPILER})
endif()
run("configure examples/template_backend" ${CMAKE_COMMAND} ${configure_args})
run("build examples/template_backend" ${CMAKE_COMMAND} --build ${build})

set(plugin ${build}/libmoert_backend_template.so)
if(NOT EXISTS ${plugin})
  message(FATAL_ERROR "the template build produced no ${plugin}")
endif()

run("load and run the template backend"
  ${CMAKE_COMMAND} -E env MOERT_BACKEND_PATH=${build} ${SMOKE} ${plugin})
message("${last_output}")
