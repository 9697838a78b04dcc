# Cross build for 32-bit ARM with hardware floating point (Debian armhf:
# ARMv7, VFPv3-D16, Thumb-2; RPM armv7hl):
#   scripts/cross-build.sh armhf
# or by hand:
#   cmake -S . -B build-armhf -DCMAKE_TOOLCHAIN_FILE=cmake/toolchains/linux-armhf.cmake
set(C8Y_CROSS_TRIPLE arm-linux-gnueabihf)
set(C8Y_CROSS_PROCESSOR armv7l)
set(C8Y_CROSS_DEB_ARCH armhf)
set(C8Y_CROSS_RPM_ARCH armv7hl)
set(C8Y_CROSS_QEMU qemu-arm-static)
include(${CMAKE_CURRENT_LIST_DIR}/debian-cross.cmake)
