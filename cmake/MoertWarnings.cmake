# moert_warnings(target): the project's warning set; errors when MOERT_WERROR.
function(moert_warnings target)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CXX,C>:-Wall -Wextra -Wpedantic -Wshadow -Wcast-align -Wunused
      -Wnull-dereference -Wimplicit-fallthrough>
    $<$<COMPILE_LANGUAGE:CXX>:-Wnon-virtual-dtor -Woverloaded-virtual>
    $<$<AND:$<BOOL:${MOERT_WERROR}>,$<COMPILE_LANGUAGE:CXX,C>>:-Werror>)
endfunction()
