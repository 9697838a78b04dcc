# Shared part of the Debian cross toolchain files (linux-arm64.cmake,
# linux-armhf.cmake): the including file sets C8Y_CROSS_TRIPLE,
# C8Y_CROSS_PROCESSOR, C8Y_CROSS_DEB_ARCH and C8Y_CROSS_QEMU first.
#
# Needs Debian's cross compilers (crossbuild-essential-<arch>) and the
# :<arch> -dev packages of every build dependency installed side by side
# with the host's (multiarch): scripts/cross-build.sh installs both.
# Libraries and .pc files come from /usr/lib/<triple>, headers from
# /usr/include and /usr/include/<triple>; there is no sysroot.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR ${C8Y_CROSS_PROCESSOR})
set(CMAKE_C_COMPILER ${C8Y_CROSS_TRIPLE}-gcc)
# Not a project language: the SDK's C++ header test compiles with it.
set(CMAKE_CXX_COMPILER ${C8Y_CROSS_TRIPLE}-g++)
# Makes find_library, find_package (config files in lib/<triple>/cmake) and
# GNUInstallDirs (libdir lib/<triple>) use the target's multiarch paths
# instead of the host's.
set(CMAKE_LIBRARY_ARCHITECTURE ${C8Y_CROSS_TRIPLE})
# GNUInstallDirs picks lib/<triple> for /usr only in native builds: the
# cross-built packages get the same multiarch layout as native ones
# (/usr/lib/<triple>/c8y-agent/plugins, /usr/lib/<triple>/pkgconfig).
set(CMAKE_INSTALL_LIBDIR lib/${C8Y_CROSS_TRIPLE} CACHE PATH
    "Object code libraries (lib/<multiarch triple>)")
# Host tools (mosquitto, openssl, dpkg-shlibdeps, rpmbuild) stay the host's.
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)

# pkg-config: only the target's .pc files. Debian's <triple>-pkg-config
# wrapper sets PKG_CONFIG_LIBDIR the same way; setting it here as well
# keeps a plain pkg-config from returning the host's libraries.
find_program(PKG_CONFIG_EXECUTABLE NAMES ${C8Y_CROSS_TRIPLE}-pkg-config pkg-config)
# /var/cache/c8y-agent-cross/<arch> holds the target's copy of -dev
# packages Debian cannot install next to the host's (install-deps.sh
# unpacks them there); it comes first.
set(ENV{PKG_CONFIG_LIBDIR}
    "/var/cache/c8y-agent-cross/${C8Y_CROSS_DEB_ARCH}/usr/lib/${C8Y_CROSS_TRIPLE}/pkgconfig:/usr/lib/${C8Y_CROSS_TRIPLE}/pkgconfig:/usr/share/pkgconfig")
set(ENV{PKG_CONFIG_PATH} "")

# ctest runs the target's test executables through qemu-user; programs
# they start (the agent, helper scripts' binaries) run through binfmt_misc,
# which must be registered (update-binfmts --enable; scripts/cross-build.sh
# checks it).
find_program(C8Y_CROSS_EMULATOR ${C8Y_CROSS_QEMU})
if(C8Y_CROSS_EMULATOR)
  set(CMAKE_CROSSCOMPILING_EMULATOR ${C8Y_CROSS_EMULATOR})
endif()

# The Debian architecture of the packages (CPack, dpkg-shlibdeps): never the
# build machine's `dpkg --print-architecture`.
set(C8Y_DEB_ARCH ${C8Y_CROSS_DEB_ARCH} CACHE STRING
    "Debian architecture of the packages")
set(C8Y_RPM_ARCH ${C8Y_CROSS_RPM_ARCH} CACHE STRING
    "RPM architecture of the packages")
