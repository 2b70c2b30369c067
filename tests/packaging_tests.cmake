# Packaging tests, included by tests/CMakeLists.txt (CTest label package;
# make test runs them in the debug build, test-asan and test-tsan skip them):
#   check_symbols     exports = the AMIO_API declarations, versioned; SONAME
#   check_version     include/amio/version.h and CHANGELOG.md = project(VERSION)
#   check_man         a man page per AMIO_API declaration, groff-clean
#   check_consumer    DESTDIR install; find_package and pkg-config consumers run
#   check_package     cpack -G DEB; both packages unpacked; the consumers run
#   check_subproject  add_subdirectory(amio) in a parent project
set(_amio_pkg_dir ${CMAKE_CURRENT_BINARY_DIR}/packaging)
set(_amio_gen "${CMAKE_GENERATOR}")

set(_amio_sym_args)
if(TARGET amio)
  string(REPLACE ";" "," _hooks "${_amio_test_hooks}")
  if(NOT _hooks)
    set(_hooks -)
  endif()
  list(APPEND _amio_sym_args lib $<TARGET_FILE:amio> $<TARGET_SONAME_FILE_NAME:amio>
       $<TARGET_FILE:amio_static> ${_hooks} any
       ${PROJECT_SOURCE_DIR}/include/amio.h ${PROJECT_SOURCE_DIR}/include/amio/version.h)
endif()
list(APPEND _amio_sym_args lib $<TARGET_FILE:amio_frame> $<TARGET_SONAME_FILE_NAME:amio_frame>
     $<TARGET_FILE:amio_frame_static> - libc ${PROJECT_SOURCE_DIR}/include/amio/frame.h)
add_test(NAME check_symbols COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/check_symbols.sh
                                    ${CMAKE_NM} ${CMAKE_OBJDUMP} ${_amio_sym_args})

add_test(NAME check_version
         COMMAND ${CMAKE_COMMAND} -DVERSION=${PROJECT_VERSION}
                 -DHEADER=${PROJECT_SOURCE_DIR}/include/amio/version.h
                 -DCHANGELOG=${PROJECT_SOURCE_DIR}/CHANGELOG.md
                 -P ${CMAKE_CURRENT_SOURCE_DIR}/check_version.cmake)
set(_amio_pkg_tests check_symbols check_version)

if(TARGET amio_man)
  find_program(AMIO_GROFF groff)
  set(_amio7 -) # amio(7) describes the event core
  if(TARGET amio)
    set(_amio7 ${PROJECT_SOURCE_DIR}/man/amio.7)
  endif()
  add_test(NAME check_man COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/check_man.sh
                                  ${AMIO_GROFF} ${AMIO_MAN_DIR}/man3 ${_amio7} ${AMIO_MAN_HEADERS})
  list(APPEND _amio_pkg_tests check_man)
endif()

# Programs built against the installed library: not with sanitizer-built
# libraries (the consumers are plain programs), and the core is needed.
if(TARGET amio AND AMIO_SANITIZE STREQUAL "" AND AMIO_INSTALL)
  set(_amio_consumer_args ${CMAKE_COMMAND} ${CMAKE_C_COMPILER} ${CMAKE_OBJDUMP}
                          ${PROJECT_VERSION} ${_amio_gen})
  add_test(NAME check_consumer
           COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/check_consumer.sh ${PROJECT_BINARY_DIR}
                   ${CMAKE_INSTALL_PREFIX} ${CMAKE_INSTALL_LIBDIR} ${_amio_pkg_dir}/consumer
                   ${_amio_consumer_args})
  get_filename_component(_cmake_bin ${CMAKE_COMMAND} DIRECTORY)
  add_test(NAME check_package
           COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/check_package.sh ${_cmake_bin}/cpack
                   ${PROJECT_BINARY_DIR} ${CMAKE_INSTALL_PREFIX} ${CMAKE_INSTALL_LIBDIR}
                   ${_amio_pkg_dir}/package ${_amio_consumer_args})
  add_test(NAME check_subproject
           COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/check_subproject.sh ${PROJECT_SOURCE_DIR}
                   ${_amio_pkg_dir}/subproject ${CMAKE_COMMAND} ${CMAKE_C_COMPILER} ${_amio_gen})
  list(APPEND _amio_pkg_tests check_consumer check_package check_subproject)
  set_tests_properties(check_consumer check_package check_subproject PROPERTIES TIMEOUT 180)
endif()
set_tests_properties(${_amio_pkg_tests} PROPERTIES LABELS package)
