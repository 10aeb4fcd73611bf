# lyre_add_plugin(<name> SOURCES ... [LIBRARIES ...] [NO_INSTALL])
# Builds plugins/<name>/ into liblyre-<name>.so next to the other plugins of the build tree, with
# every symbol hidden but the entry point (ABI rule 1), and installs it into lib/lyre/plugins.
set(LYRE_PLUGIN_VERSION_SCRIPT ${CMAKE_CURRENT_LIST_DIR}/lyre-plugin.map)

function(lyre_add_plugin name)
  cmake_parse_arguments(ARG "NO_INSTALL" "OUTPUT_DIRECTORY" "SOURCES;LIBRARIES" ${ARGN})
  set(target lyre-${name})
  add_library(${target} MODULE ${ARG_SOURCES})
  target_link_libraries(${target} PRIVATE lyre::sdk ${ARG_LIBRARIES})
  if(NOT ARG_OUTPUT_DIRECTORY)
    set(ARG_OUTPUT_DIRECTORY ${LYRE_BUILD_PLUGIN_DIR})
  endif()
  set_target_properties(${target} PROPERTIES
    PREFIX "lib"
    OUTPUT_NAME lyre-${name}
    LIBRARY_OUTPUT_DIRECTORY ${ARG_OUTPUT_DIRECTORY}
    CXX_VISIBILITY_PRESET hidden
    C_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON)
  target_link_options(${target} PRIVATE -Wl,--no-undefined -Wl,--exclude-libs,ALL
    -Wl,--version-script=${LYRE_PLUGIN_VERSION_SCRIPT})
  set_property(TARGET ${target} APPEND PROPERTY LINK_DEPENDS ${LYRE_PLUGIN_VERSION_SCRIPT})
  if(NOT ARG_NO_INSTALL)
    install(TARGETS ${target} LIBRARY DESTINATION ${LYRE_PLUGIN_INSTALL_DIR} COMPONENT runtime)
  endif()
endfunction()
