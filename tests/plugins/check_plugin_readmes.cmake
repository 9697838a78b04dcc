# cmake -DDIRS=dir1|dir2 -P check_plugin_readmes.cmake
# Every key a plugin reads with config_string/config_int/config_bool("key"),
# directly or through plugins/common's cmn_cfg_*(api, self, "key"), must
# appear as `key` in its README.md.
string(REPLACE "|" ";" _dirs "${DIRS}")
set(_bad 0)
foreach(d ${_dirs})
  if(NOT EXISTS ${d}/README.md)
    message(SEND_ERROR "${d}: README.md missing")
    math(EXPR _bad "${_bad} + 1")
    continue()
  endif()
  file(READ ${d}/README.md _readme)
  file(GLOB _srcs ${d}/*.c)
  foreach(s ${_srcs})
    file(READ ${s} _src)
    string(REGEX MATCHALL "config_(string|int|bool)\\([^,]+,[ \n\t]*\"[a-z0-9_]+\""
           _calls "${_src}")
    # The shared helpers of plugins/common take (api, self, "key", ...).
    string(REGEX MATCHALL "cmn_cfg_[a-z]+\\([^,]+,[^,]+,[ \n\t]*\"[a-z0-9_]+\""
           _cmn_calls "${_src}")
    list(APPEND _calls ${_cmn_calls})
    foreach(c ${_calls})
      string(REGEX MATCH "\"([a-z0-9_]+)\"$" _m "${c}")
      set(_key "${CMAKE_MATCH_1}")
      string(FIND "${_readme}" "`${_key}`" _pos)
      if(_pos EQUAL -1)
        message(SEND_ERROR "${d}/README.md: config key `${_key}` (read in ${s}) is not documented")
        math(EXPR _bad "${_bad} + 1")
      endif()
    endforeach()
  endforeach()
endforeach()
if(_bad GREATER 0)
  message(FATAL_ERROR "${_bad} undocumented key(s)/README(s)")
endif()
