# C8ySystemInstall.cmake - install rules for files that live outside the
# prefix on a real system (/etc/c8y-agent, the systemd unit directory):
#
#   c8y_install_system(DESTINATION /abs/dir COMPONENT c
#                      [FILES f...] [PERMISSIONS p...] [EMPTY_DIR])
#
# With the prefix the build was configured for (`cmake --install build`, and
# CPack, which installs with that prefix into DESTDIR) they go to the
# absolute path. With another prefix (`cmake --install build --prefix P`)
# they go below P (P/etc/c8y-agent/...): a prefix install writes nothing
# outside P. DESTDIR is honoured in both cases (file(INSTALL) adds it).
include_guard(GLOBAL)

function(c8y_install_system)
  cmake_parse_arguments(A "EMPTY_DIR" "DESTINATION;COMPONENT" "FILES;PERMISSIONS"
                        ${ARGN})
  if(NOT IS_ABSOLUTE "${A_DESTINATION}" OR NOT A_COMPONENT)
    message(FATAL_ERROR "c8y_install_system: needs an absolute DESTINATION and a COMPONENT")
  endif()
  string(REGEX REPLACE "^/+" "" _rel "${A_DESTINATION}")
  set(_code
      "if(\"\${CMAKE_INSTALL_PREFIX}\" STREQUAL \"${CMAKE_INSTALL_PREFIX}\")
  set(_c8y_dest \"${A_DESTINATION}\")
else()
  set(_c8y_dest \"\${CMAKE_INSTALL_PREFIX}/${_rel}\")
endif()
")
  if(A_FILES)
    set(_perm "")
    if(A_PERMISSIONS)
      string(JOIN " " _perm PERMISSIONS ${A_PERMISSIONS})
    endif()
    set(_files "")
    foreach(f ${A_FILES})
      string(APPEND _files " \"${f}\"")
    endforeach()
    string(APPEND _code
           "file(INSTALL DESTINATION \"\${_c8y_dest}\" TYPE FILE ${_perm} FILES${_files})\n")
  endif()
  if(A_EMPTY_DIR)
    string(APPEND _code
           "file(INSTALL DESTINATION \"\${_c8y_dest}\" TYPE DIRECTORY FILES \"\")\n")
  endif()
  install(CODE "${_code}" COMPONENT ${A_COMPONENT})
endfunction()
