# Install rules (cmake --install, make install, CPack): libraries, headers,
# amioConfig.cmake with the imported targets amio::amio, amio::frame (shared)
# and amio::amio_static, amio::frame_static, pkg-config files and man pages.
# Components: runtime (the versioned shared libraries) and dev (the rest).
include(CMakePackageConfigHelpers)

set(AMIO_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/amio)
set(_amio_lib_dest LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT runtime
                   NAMELINK_COMPONENT dev
                   ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT dev)

# Framing: libc only, so its targets load without pkg-config.
install(TARGETS amio_frame amio_frame_static EXPORT amioFrameTargets ${_amio_lib_dest})
install(EXPORT amioFrameTargets NAMESPACE amio:: DESTINATION ${AMIO_CMAKE_DIR} COMPONENT dev)
install(FILES ${PROJECT_SOURCE_DIR}/include/amio/frame.h
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/amio COMPONENT dev)
set(AMIO_PC_FILES amio-frame)

if(TARGET amio)
  # The core links liburing and ck (pkg-config) and pthread.
  install(TARGETS amio amio_static EXPORT amioCoreTargets ${_amio_lib_dest})
  install(EXPORT amioCoreTargets NAMESPACE amio:: DESTINATION ${AMIO_CMAKE_DIR} COMPONENT dev)
  install(FILES ${PROJECT_SOURCE_DIR}/include/amio.h
          DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} COMPONENT dev)
  install(FILES ${PROJECT_SOURCE_DIR}/include/amio/version.h
          DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/amio COMPONENT dev)
  list(APPEND AMIO_PC_FILES amio)
endif()

configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/amioConfig.cmake.in
                              ${PROJECT_BINARY_DIR}/amioConfig.cmake
                              INSTALL_DESTINATION ${AMIO_CMAKE_DIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/amioConfigVersion.cmake
                                 VERSION ${PROJECT_VERSION} COMPATIBILITY SameMajorVersion)
install(FILES ${PROJECT_BINARY_DIR}/amioConfig.cmake ${PROJECT_BINARY_DIR}/amioConfigVersion.cmake
        DESTINATION ${AMIO_CMAKE_DIR} COMPONENT dev)

# pkg-config: paths of the configured prefix (make install PREFIX=... sets it).
if(IS_ABSOLUTE "${CMAKE_INSTALL_LIBDIR}")
  set(AMIO_PC_LIBDIR "${CMAKE_INSTALL_LIBDIR}")
else()
  set(AMIO_PC_LIBDIR "\${exec_prefix}/${CMAKE_INSTALL_LIBDIR}")
endif()
if(IS_ABSOLUTE "${CMAKE_INSTALL_INCLUDEDIR}")
  set(AMIO_PC_INCLUDEDIR "${CMAKE_INSTALL_INCLUDEDIR}")
else()
  set(AMIO_PC_INCLUDEDIR "\${prefix}/${CMAKE_INSTALL_INCLUDEDIR}")
endif()
foreach(pc ${AMIO_PC_FILES})
  configure_file(${PROJECT_SOURCE_DIR}/cmake/${pc}.pc.in ${PROJECT_BINARY_DIR}/${pc}.pc @ONLY)
  install(FILES ${PROJECT_BINARY_DIR}/${pc}.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig
          COMPONENT dev)
endforeach()

# Man pages: man3 generated from the header comments (amio_man), amio(7) by hand.
if(TARGET amio_man)
  install(DIRECTORY ${AMIO_MAN_DIR}/man3 DESTINATION ${CMAKE_INSTALL_MANDIR} COMPONENT dev
          FILES_MATCHING PATTERN "*.3")
endif()
if(TARGET amio) # amio(7) describes the event core
  install(FILES ${PROJECT_SOURCE_DIR}/man/amio.7 DESTINATION ${CMAKE_INSTALL_MANDIR}/man7
          COMPONENT dev)
endif()

install(FILES ${PROJECT_SOURCE_DIR}/LICENSE ${PROJECT_SOURCE_DIR}/CHANGELOG.md
        DESTINATION ${CMAKE_INSTALL_DOCDIR} COMPONENT runtime)
