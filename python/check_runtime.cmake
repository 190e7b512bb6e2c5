# Post-build check of the extension (python/CMakeLists.txt): it must load the shared libstdc++, as libdiffsample
# does. A copy of libstdc++ linked into the extension runs beside the process's shared one, and the two runtimes'
# iostream locales do not mix: the first number the extension formatted crashed (std::ostream << long, in a locale
# facet), as on a GPU machine whose build of the extension took a static libstdc++.
#   cmake -DFILE=<extension> -DOBJDUMP=<objdump> -P check_runtime.cmake
if(NOT OBJDUMP OR NOT EXISTS "${OBJDUMP}")
  message(STATUS "diffsample: objdump not found; the extension's C++ runtime is not checked")
  return()
endif()
execute_process(COMMAND "${OBJDUMP}" -p "${FILE}" OUTPUT_VARIABLE headers RESULT_VARIABLE rc ERROR_QUIET)
if(NOT rc EQUAL 0)
  message(STATUS "diffsample: objdump -p failed on ${FILE}; the extension's C++ runtime is not checked")
  return()
endif()
if(NOT headers MATCHES "NEEDED +libstdc\\+\\+\\.so" AND NOT headers MATCHES "NEEDED +libc\\+\\+\\.so")
  message(FATAL_ERROR "diffsample: ${FILE} does not load the shared C++ runtime (no NEEDED libstdc++.so): libstdc++ "
                      "was linked into it statically (-static-libstdc++ in LDFLAGS or CMAKE_*_LINKER_FLAGS, or a "
                      "compiler whose libstdc++.so link is missing, so that the linker took libstdc++.a). Two C++ "
                      "runtimes in one process crash the first formatted number. Remove -static-libstdc++, or install "
                      "the compiler's libstdc++ development package.")
endif()
