# Initial cache for RPM packages built on a non-RPM system (Debian):
#   cmake -C packaging/rpm/layout.cmake -S . -B build-rpm -DC8Y_BUILD_TESTS=OFF
# gives the paths of %{_libdir}, %{_unitdir} and %{_libexecdir} on x86_64
# Fedora/RHEL/SUSE instead of Debian's multiarch ones. On the RPM
# distribution itself GNUInstallDirs and pkg-config find these already.
set(CMAKE_INSTALL_PREFIX /usr CACHE PATH "")
set(CMAKE_INSTALL_LIBDIR lib64 CACHE PATH "")
set(CMAKE_INSTALL_LIBEXECDIR libexec CACHE PATH "")
set(C8Y_SYSTEMD_UNITDIR /usr/lib/systemd/system CACHE PATH "")
