# moert_warnings(target): the project's warning set; errors when MOERT_WERROR.
function(moert_warnings target)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CXX,C>:-Wall -Wextra -Wpedantic -Wshadow -Wcast-align -Wunused
      -Wimplicit-fallthrough>
    $<$<COMPILE_LANGUAGE:CXX>:-Wnon-virtual-dtor -Woverloaded-virtual>
    $<$<AND:$<BOOL:${MOERT_WERROR}>,$<COMPILE_LANGUAGE:CXX,C>>:-Werror>
    # gcc 12 reports -Wrestrict falsely inside std::string at -O3 (gcc bug 105329).
    $<$<AND:$<CXX_COMPILER_ID:GNU>,$<VERSION_LESS:$<CXX_COMPILER_VERSION>,13>,$<COMPILE_LANGUAGE:CXX>>:-Wno-restrict>)
endfunction()
