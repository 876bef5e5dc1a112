# Debian package: `cpack -G DEB` in the build directory gives
# walbus_<version>_amd64.deb with
#   /usr/bin/walbus
#   /etc/walbus/walbus.toml          (conf/walbus.example.toml, a conffile,
#                                     root:walbus 0640 set by postinst)
#   /lib/systemd/system/walbus.service
#   /usr/share/man/man1/walbus.1.gz, /usr/share/doc/walbus/
# Depends is computed by dpkg-shlibdeps (package dpkg-dev) from the binary.
# Included once, at the end of the top-level CMakeLists.txt.

set(WALBUS_DEB_DIR ${CMAKE_CURRENT_LIST_DIR})

# --- what the package installs -------------------------------------------
# Relative destinations are under CPACK_PACKAGING_INSTALL_PREFIX (/usr);
# /etc and /lib/systemd are absolute, as Debian wants them.
install(TARGETS walbus RUNTIME DESTINATION bin)
install(FILES ${CMAKE_SOURCE_DIR}/conf/walbus.example.toml
        DESTINATION /etc/walbus RENAME walbus.toml
        PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ)
install(FILES ${WALBUS_DEB_DIR}/walbus.service
        DESTINATION /lib/systemd/system
        PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)

# Man page, compressed the Debian way (gzip -9n: reproducible), at configure
# time; editing walbus.1 re-runs the configuration.
set(WALBUS_MAN_GZ ${CMAKE_BINARY_DIR}/compose-deb/walbus.1.gz)
file(MAKE_DIRECTORY ${CMAKE_BINARY_DIR}/compose-deb)
execute_process(COMMAND gzip -9nc ${WALBUS_DEB_DIR}/walbus.1
                OUTPUT_FILE ${WALBUS_MAN_GZ} RESULT_VARIABLE walbus_man_rc)
if(NOT walbus_man_rc EQUAL 0)
  message(FATAL_ERROR "gzip of ${WALBUS_DEB_DIR}/walbus.1 failed: ${walbus_man_rc}")
endif()
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${WALBUS_DEB_DIR}/walbus.1)
install(FILES ${WALBUS_MAN_GZ} DESTINATION share/man/man1
        PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)

install(FILES ${CMAKE_SOURCE_DIR}/README.md DESTINATION share/doc/walbus
        PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
install(DIRECTORY ${CMAKE_SOURCE_DIR}/conf/examples/ DESTINATION share/doc/walbus/examples
        FILE_PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)

# --- package metadata ------------------------------------------------------
set(WALBUS_DEB_MAINTAINER "walbus maintainers <walbus@localhost>"
    CACHE STRING "Maintainer field of the Debian package")
set(WALBUS_DEB_HOMEPAGE "https://github.com/walbus/walbus"
    CACHE STRING "Homepage field of the Debian package")

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME walbus)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_VENDOR "walbus")
set(CPACK_PACKAGE_CONTACT "${WALBUS_DEB_MAINTAINER}")
set(CPACK_PACKAGE_HOMEPAGE_URL "${WALBUS_DEB_HOMEPAGE}")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY
    "PostgreSQL change data capture to NATS, MQTT and Redis Streams")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)
# Directories in the package: 0755, whatever the umask of the build.
set(CPACK_INSTALL_DEFAULT_DIRECTORY_PERMISSIONS
    OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ GROUP_EXECUTE WORLD_READ WORLD_EXECUTE)

set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)          # walbus_<version>_<arch>.deb
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "${WALBUS_DEB_MAINTAINER}")
set(CPACK_DEBIAN_PACKAGE_HOMEPAGE "${WALBUS_DEB_HOMEPAGE}")
set(CPACK_DEBIAN_PACKAGE_SECTION database)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
# The first line of Description is CPACK_PACKAGE_DESCRIPTION_SUMMARY.
set(CPACK_DEBIAN_PACKAGE_DESCRIPTION
"walbus streams every committed row change of a PostgreSQL database to NATS
(core and JetStream), MQTT, Redis Streams or standard output, as one JSON
envelope per change. It reads PostgreSQL's built-in pgoutput logical decoding
over the streaming replication protocol: no server plugin, no Kafka, no JVM.
Delivery is at-least-once, tied to the replication slot.
.
This package ships the walbus binary, a systemd service (disabled until the
administrator enables it) and /etc/walbus/walbus.toml.")
# Library dependencies from the binary (dpkg-shlibdeps); adduser for postinst.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "adduser")
set(CPACK_DEBIAN_PACKAGE_SUGGESTS "postgresql, nats-server, mosquitto, redis-server")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${WALBUS_DEB_DIR}/conffiles
    ${WALBUS_DEB_DIR}/postinst
    ${WALBUS_DEB_DIR}/prerm
    ${WALBUS_DEB_DIR}/postrm)
# Control files get Debian's modes (0755 scripts, 0644 conffiles) whatever
# their mode in the source tree.
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)

# `make package_source`: the source tree without VCS data and build trees.
set(CPACK_SOURCE_GENERATOR TGZ)
set(CPACK_SOURCE_IGNORE_FILES "/\\.git/" "/build[^/]*/" "/_CPack_Packages/")

include(CPack)
