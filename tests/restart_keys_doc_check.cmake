# docs/packaging.md lists the config keys a SIGHUP reload refuses; the list
# between its "restart-only keys" markers must equal the RESTART_ONLY rows
# of the key table in agent/src/config.c (order ignored).
file(READ ${SRC}/agent/src/config.c code)
file(READ ${SRC}/docs/packaging.md doc)
# A row is KEY("section", "key"), kind, min, max, then RESTART_ONLY(field)
# or RELOADABLE before its closing brace.
string(REGEX MATCHALL "KEY\\(\"[a-z_]+\", \"[a-z_]+\"\\)[^}]*RESTART_ONLY"
       rows "${code}")
set(want "")
foreach(r ${rows})
  string(REGEX MATCH "KEY\\(\"([a-z_]+)\", \"([a-z_]+)\"\\)" _ "${r}")
  list(APPEND want "[${CMAKE_MATCH_1}] ${CMAKE_MATCH_2}")
endforeach()
string(REGEX MATCH "<!-- restart-only keys:[^\n]*-->(.*)<!-- end of restart-only keys -->"
       block "${doc}")
if(NOT block)
  message(FATAL_ERROR "docs/packaging.md: no restart-only keys block")
endif()
string(REGEX MATCHALL "`\\[[a-z_]+\\] [a-z_]+`" have "${CMAKE_MATCH_1}")
list(TRANSFORM have REPLACE "`" "")
list(SORT want)
list(SORT have)
list(LENGTH want nwant)
if(nwant EQUAL 0)
  message(FATAL_ERROR "agent/src/config.c: no RESTART_ONLY rows found (has the key table changed shape?)")
endif()
if(NOT "${have}" STREQUAL "${want}")
  message(FATAL_ERROR "docs/packaging.md: restart-only keys are '${have}', agent/src/config.c says '${want}'")
endif()
