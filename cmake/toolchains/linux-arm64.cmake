# Cross build for 64-bit ARM (Debian arm64, RPM aarch64):
#   scripts/cross-build.sh arm64
# or by hand:
#   cmake -S . -B build-arm64 -DCMAKE_TOOLCHAIN_FILE=cmake/toolchains/linux-arm64.cmake
set(C8Y_CROSS_TRIPLE aarch64-linux-gnu)
set(C8Y_CROSS_PROCESSOR aarch64)
set(C8Y_CROSS_DEB_ARCH arm64)
set(C8Y_CROSS_RPM_ARCH aarch64)
set(C8Y_CROSS_QEMU qemu-aarch64-static)
include(${CMAKE_CURRENT_LIST_DIR}/debian-cross.cmake)
