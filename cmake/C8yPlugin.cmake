# C8yPlugin.cmake - build a c8y-agent plugin with one line:
#
#   c8y_add_plugin(<name> SOURCES a.c b.c [LIBRARIES lib...] [NO_INSTALL])
#
# produces <name>.so (no "lib" prefix) that exports only c8y_plugin_info_v1
# (hidden visibility), refuses to link with undefined symbols (a plugin gets
# everything from the agent through the c8y_api table, never by symbol), and
# installs into ${C8Y_PLUGINDIR} in the "runtime" component (not with
# NO_INSTALL: built and tested, but never loaded by an installed agent).
#
# Used in-tree and shipped with the SDK package, so it depends only on the
# C8y::sdk target; c8y_warnings (warnings, sanitizers, no feature macros:
# a plugin source defines its own) is used when present.
include_guard(GLOBAL)
include(GNUInstallDirs)

if(NOT DEFINED C8Y_PLUGINDIR OR C8Y_PLUGINDIR STREQUAL "")
  set(C8Y_PLUGINDIR "${CMAKE_INSTALL_LIBDIR}/c8y-agent/plugins")
endif()
# All plugins land in one directory so an in-tree agent or test can point its
# plugin_dir at it.
if(NOT DEFINED C8Y_PLUGIN_OUTPUT_DIR)
  set(C8Y_PLUGIN_OUTPUT_DIR "${CMAKE_BINARY_DIR}/plugins-out")
endif()

function(c8y_add_plugin name)
  cmake_parse_arguments(P "NO_INSTALL" "" "SOURCES;LIBRARIES" ${ARGN})
  if(P_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "c8y_add_plugin(${name}): unknown arguments: ${P_UNPARSED_ARGUMENTS}")
  endif()
  if(NOT P_SOURCES)
    message(FATAL_ERROR "c8y_add_plugin(${name}): SOURCES is required")
  endif()
  if(NOT name MATCHES "^[a-z0-9_]+$")
    message(FATAL_ERROR "c8y_add_plugin(${name}): the name must match [a-z0-9_]+ (it is also the config section)")
  endif()
  if(NOT TARGET C8y::sdk)
    message(FATAL_ERROR "c8y_add_plugin(${name}): target C8y::sdk not found (find_package the c8y-agent SDK first)")
  endif()

  add_library(${name} MODULE ${P_SOURCES})
  target_link_libraries(${name} PRIVATE C8y::sdk ${P_LIBRARIES})
  if(TARGET c8y_warnings)
    target_link_libraries(${name} PRIVATE c8y_warnings)
  endif()
  set_target_properties(${name} PROPERTIES
    PREFIX ""
    OUTPUT_NAME ${name}
    C_VISIBILITY_PRESET hidden
    CXX_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON
    LIBRARY_OUTPUT_DIRECTORY ${C8Y_PLUGIN_OUTPUT_DIR})
  target_link_options(${name} PRIVATE "LINKER:--no-undefined")
  if(NOT P_NO_INSTALL)
    install(TARGETS ${name} LIBRARY DESTINATION ${C8Y_PLUGINDIR} COMPONENT runtime)
    set_property(GLOBAL APPEND PROPERTY C8Y_INSTALLED_PLUGINS ${name})
  endif()
  # Lets tests (e.g. the exported-symbols check) iterate over all plugins.
  set_property(GLOBAL APPEND PROPERTY C8Y_PLUGIN_TARGETS ${name})
endfunction()
