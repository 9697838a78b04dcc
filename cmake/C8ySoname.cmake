# c8y_soname_of(<var> <file>): the SONAME of a shared library file, for
# code that loads the library on first use (dlopen by SONAME) instead of
# linking it. The SONAME, not a path: the package's dependency comes from
# it, and the build machine's path is not the device's.
include_guard(GLOBAL)
find_program(C8Y_READELF NAMES ${CMAKE_READELF} readelf REQUIRED)

function(c8y_soname_of var file)
  file(REAL_PATH "${file}" _real)
  execute_process(COMMAND ${C8Y_READELF} -d "${_real}" OUTPUT_VARIABLE _dyn)
  string(REGEX MATCH "Library soname: \\[([^]]+)\\]" _ "${_dyn}")
  if(NOT CMAKE_MATCH_1)
    message(FATAL_ERROR "cannot read the SONAME of ${_real}")
  endif()
  set(${var} "${CMAKE_MATCH_1}" PARENT_SCOPE)
endfunction()
