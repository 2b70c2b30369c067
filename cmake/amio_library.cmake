# amio_add_library(<name> EXPORT_NAME <n> MAP_NODE <node> SOURCES <src...>
#                  [EXTRA_SYMBOLS <sym...>] [PRIVATE_LIBS <tgt...>] [PUBLIC_LIBS <tgt...>])
#
# One set of objects (PIC, hidden visibility) linked twice:
#   <name>         shared lib<name>.so.<VERSION>, SONAME lib<name>.so.<MAJOR>; exports
#                  only amio_* (the AMIO_API functions) under the version node
#                  <node>_<MAJOR>.<MINOR> (cmake/amio.map.in). The in-tree tests,
#                  examples and benchmarks link this one.
#   <name>_static  static lib<name>.a
# plus ALIAS targets amio::<n> and amio::<n>_static, the names the installed
# amioConfig.cmake gives them. EXTRA_SYMBOLS: further exports (test hooks).
# The objects are <name>_objects: add private sources and definitions there.
function(amio_add_library name)
  cmake_parse_arguments(L "" "EXPORT_NAME;MAP_NODE" "SOURCES;EXTRA_SYMBOLS;PRIVATE_LIBS;PUBLIC_LIBS"
                        ${ARGN})
  set(AMIO_MAP_NODE "${L_MAP_NODE}_${PROJECT_VERSION_MAJOR}.${PROJECT_VERSION_MINOR}")
  set(AMIO_MAP_EXTRA "")
  foreach(sym ${L_EXTRA_SYMBOLS})
    string(APPEND AMIO_MAP_EXTRA "\t\t${sym};\n")
  endforeach()
  set(AMIO_MAP_LIB ${name})
  set(map ${PROJECT_BINARY_DIR}/${name}.map)
  configure_file(${PROJECT_SOURCE_DIR}/cmake/amio.map.in ${map} @ONLY)

  add_library(${name}_objects OBJECT ${L_SOURCES})
  set_target_properties(${name}_objects PROPERTIES POSITION_INDEPENDENT_CODE ON
                                                   C_VISIBILITY_PRESET hidden)
  target_compile_definitions(${name}_objects PRIVATE _GNU_SOURCE)
  # Calls between exported functions stay direct inside the library.
  target_compile_options(${name}_objects PRIVATE -fno-semantic-interposition)
  target_include_directories(${name}_objects PUBLIC ${PROJECT_SOURCE_DIR}/include)
  target_link_libraries(${name}_objects PRIVATE ${L_PRIVATE_LIBS} ${L_PUBLIC_LIBS})

  add_library(${name} SHARED $<TARGET_OBJECTS:${name}_objects>)
  add_library(${name}_static STATIC $<TARGET_OBJECTS:${name}_objects>)
  foreach(t ${name} ${name}_static)
    target_include_directories(${t} PUBLIC $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/include>
                                           $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
    target_link_libraries(${t} PRIVATE ${L_PRIVATE_LIBS} PUBLIC ${L_PUBLIC_LIBS})
    set_target_properties(${t} PROPERTIES OUTPUT_NAME ${name})
  endforeach()
  set_target_properties(${name} PROPERTIES VERSION ${PROJECT_VERSION}
                                           SOVERSION ${PROJECT_VERSION_MAJOR}
                                           EXPORT_NAME ${L_EXPORT_NAME}
                                           LINK_DEPENDS ${map})
  set_target_properties(${name}_static PROPERTIES EXPORT_NAME ${L_EXPORT_NAME}_static)
  target_link_options(${name} PRIVATE "LINKER:--version-script=${map}")
  if(AMIO_SANITIZE STREQUAL "")
    # Every symbol resolved at link time (the sanitizer runtimes are not).
    target_link_options(${name} PRIVATE "LINKER:--no-undefined")
  endif()
  add_library(amio::${L_EXPORT_NAME} ALIAS ${name})
  add_library(amio::${L_EXPORT_NAME}_static ALIAS ${name}_static)
endfunction()
