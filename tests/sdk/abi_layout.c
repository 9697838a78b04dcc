/* Freezes the plugin ABI (1.0, 1.1, 1.2, 1.3) on LP64 targets (x86_64, aarch64,
 * ...) and on ILP32 targets whose 64-bit integers are 8-byte aligned (armhf,
 * the ARM EABI): every offset and size below is written out by hand, so
 * reordering, retyping or inserting a field fails to compile. A minor
 * release may only append fields: then add asserts for them, in both
 * tables, and keep every existing line. */
#include <c8y/plugin.h>

#include <stddef.h>
#include <stdint.h>

#if defined(__LP64__)
#define C8Y_ABI_LP64 1
#elif __SIZEOF_POINTER__ == 4 && __SIZEOF_LONG__ == 4 && __SIZEOF_SIZE_T__ == 4
#define C8Y_ABI_ILP32 1
#else
#error "abi_layout.c: the frozen numbers are for LP64 and ILP32 targets"
#endif

#define AT(type, field, off)                                                   \
  _Static_assert(offsetof(type, field) == (off),                               \
                 #type "." #field " moved: the 1.0 ABI is frozen")

_Static_assert(C8Y_ABI_MAJOR == 1, "ABI major changed: needs symbol _v2");
_Static_assert(C8Y_ABI_MINOR >= 0, "ABI minor never decreases");

#if C8Y_ABI_LP64
/* c8y_api 1.0 */
AT(c8y_api, abi_major, 0);
AT(c8y_api, abi_minor, 4);
AT(c8y_api, size, 8);
AT(c8y_api, status_str, 16);
AT(c8y_api, log, 24);
AT(c8y_api, config_string, 32);
AT(c8y_api, config_int, 40);
AT(c8y_api, config_bool, 48);
AT(c8y_api, add_producer, 56);
AT(c8y_api, add_operation, 64);
AT(c8y_api, add_message_handler, 72);
AT(c8y_api, add_child, 80);
AT(c8y_api, batch_add, 88);
AT(c8y_api, batch_set_time, 96);
AT(c8y_api, batch_set_type, 104);
AT(c8y_api, batch_set_child, 112);
AT(c8y_api, send_event, 120);
AT(c8y_api, raise_alarm, 128);
AT(c8y_api, clear_alarm, 136);
AT(c8y_api, send_static, 144);
AT(c8y_api, send_custom, 152);
AT(c8y_api, op_template, 160);
AT(c8y_api, op_fragment, 168);
AT(c8y_api, op_device, 176);
AT(c8y_api, op_field_count, 184);
AT(c8y_api, op_field, 192);
AT(c8y_api, op_succeed, 200);
AT(c8y_api, op_succeed_params, 208);
AT(c8y_api, op_fail, 216);
AT(c8y_api, op_cancelled, 224);
AT(c8y_api, op_complete_on_reboot, 232);
AT(c8y_api, msg_id, 240);
AT(c8y_api, msg_field_count, 248);
AT(c8y_api, msg_field, 256);
AT(c8y_api, device_id, 264);
AT(c8y_api, state_dir, 272);
/* 1.0 ends here; a minor release may only grow it. */
_Static_assert(sizeof(c8y_api) >= 280, "c8y_api shrank");
#if C8Y_ABI_MINOR == 0
_Static_assert(sizeof(c8y_api) == 280, "c8y_api 1.0 must be 280 bytes");
#endif

/* c8y_api 1.1: appended after state_dir */
#if C8Y_ABI_MINOR >= 1
AT(c8y_api, download, 280);
AT(c8y_api, upload, 288);
AT(c8y_api, op_resume_after_restart, 296);
AT(c8y_api, op_resumed, 304);
AT(c8y_api, op_rebooted, 312);
AT(c8y_api, add_child_operation, 320);
_Static_assert(sizeof(c8y_api) >= 328, "c8y_api shrank below 1.1");
#endif
#if C8Y_ABI_MINOR == 1
_Static_assert(sizeof(c8y_api) == 328, "c8y_api 1.1 must be 328 bytes");
#endif

#if C8Y_ABI_MINOR >= 1
/* The transfer structs of 1.1; frozen in every later minor (a 1.1 plugin
 * passes exactly these sizes). */
AT(c8y_download, size, 0);
AT(c8y_download, url, 8);
AT(c8y_download, file, 16);
AT(c8y_download, max_bytes, 24);
AT(c8y_download, sha256, 32);
AT(c8y_download, op, 40);
AT(c8y_download, path, 48);
AT(c8y_download, bytes, 560);
AT(c8y_download, http_code, 568);
AT(c8y_download, error, 576);
_Static_assert(sizeof(c8y_download) == 832, "c8y_download 1.1 is 832 bytes");
AT(c8y_upload, size, 0);
AT(c8y_upload, path, 8);
AT(c8y_upload, child_id, 16);
AT(c8y_upload, type, 24);
AT(c8y_upload, text, 32);
AT(c8y_upload, content_type, 40);
AT(c8y_upload, file_name, 48);
AT(c8y_upload, op, 56);
AT(c8y_upload, url, 64);
AT(c8y_upload, http_code, 576);
AT(c8y_upload, error, 584);
_Static_assert(sizeof(c8y_upload) == 840, "c8y_upload 1.1 is 840 bytes");
_Static_assert(sizeof(((c8y_download *)0)->path) == 512 &&
                   sizeof(((c8y_download *)0)->error) == 256 &&
                   sizeof(((c8y_upload *)0)->url) == 512 &&
                   sizeof(((c8y_upload *)0)->error) == 256,
               "transfer buffers");
#endif

/* c8y_api 1.2: appended after add_child_operation */
#if C8Y_ABI_MINOR >= 2
AT(c8y_api, add_fragment_operation, 328);
AT(c8y_api, add_device_operation, 336);
AT(c8y_api, op_id, 344);
AT(c8y_api, op_json, 352);
AT(c8y_api, op_json_value, 360);
AT(c8y_api, op_cancel_reason, 368);
AT(c8y_api, remove_child, 376);
AT(c8y_api, batch_begin, 384);
AT(c8y_api, batch_commit, 392);
AT(c8y_api, batch_discard, 400);
AT(c8y_api, set_health, 408);
AT(c8y_api, platform_auth, 416);
AT(c8y_api, add_template_operation, 424);
_Static_assert(sizeof(c8y_api) >= 432, "c8y_api shrank below 1.2");
AT(c8y_platform_auth, size, 0);
AT(c8y_platform_auth, url, 8);
AT(c8y_platform_auth, authorization, 16);
AT(c8y_platform_auth, base_url, 8208);
AT(c8y_platform_auth, ca_file, 8720);
AT(c8y_platform_auth, ca_path, 9232);
AT(c8y_platform_auth, verify_peer, 9744);
AT(c8y_platform_auth, verify_hostname, 9748);
AT(c8y_platform_auth, error, 9752);
_Static_assert(sizeof(c8y_platform_auth) == 10008,
               "c8y_platform_auth 1.2 is 10008 bytes");
#endif
#if C8Y_ABI_MINOR == 2
_Static_assert(sizeof(c8y_api) == 432, "c8y_api 1.2 must be 432 bytes");
#endif

/* c8y_api 1.3 */
#if C8Y_ABI_MINOR >= 3
AT(c8y_api, config_origin, 432);
_Static_assert(sizeof(c8y_api) >= 440, "c8y_api shrank below 1.3");
#endif
#if C8Y_ABI_MINOR == 3
_Static_assert(sizeof(c8y_api) == 440, "c8y_api 1.3 must be 440 bytes");
#endif

/* c8y_plugin_info 1.0 */
AT(c8y_plugin_info, abi_major, 0);
AT(c8y_plugin_info, abi_minor, 4);
AT(c8y_plugin_info, size, 8);
AT(c8y_plugin_info, name, 16);
AT(c8y_plugin_info, version, 24);
AT(c8y_plugin_info, init, 32);
AT(c8y_plugin_info, fini, 40);
_Static_assert(sizeof(c8y_plugin_info) >= 48, "c8y_plugin_info shrank");
#if C8Y_ABI_MINOR == 0
_Static_assert(sizeof(c8y_plugin_info) == 48,
               "c8y_plugin_info 1.0 must be 48 bytes");
#endif

/* Field types a plugin relies on. */
_Static_assert(sizeof(((c8y_api *)0)->abi_major) == 4, "abi_major is u32");
_Static_assert(sizeof(((c8y_api *)0)->size) == 8, "size is size_t");
_Static_assert(sizeof(((c8y_plugin_info *)0)->abi_minor) == 4,
               "abi_minor is u32");
#else /* C8Y_ABI_ILP32 */
/* i386 aligns uint64_t in structs to 4: its c8y_download would differ from
 * the numbers below and needs a table of its own. */
_Static_assert(_Alignof(uint64_t) == 8,
               "ILP32 table: for targets that align uint64_t to 8 (ARM EABI)");

/* c8y_api 1.0: two u32, size_t, then 4-byte function pointers */
AT(c8y_api, abi_major, 0);
AT(c8y_api, abi_minor, 4);
AT(c8y_api, size, 8);
AT(c8y_api, status_str, 12);
AT(c8y_api, log, 16);
AT(c8y_api, config_string, 20);
AT(c8y_api, config_int, 24);
AT(c8y_api, config_bool, 28);
AT(c8y_api, add_producer, 32);
AT(c8y_api, add_operation, 36);
AT(c8y_api, add_message_handler, 40);
AT(c8y_api, add_child, 44);
AT(c8y_api, batch_add, 48);
AT(c8y_api, batch_set_time, 52);
AT(c8y_api, batch_set_type, 56);
AT(c8y_api, batch_set_child, 60);
AT(c8y_api, send_event, 64);
AT(c8y_api, raise_alarm, 68);
AT(c8y_api, clear_alarm, 72);
AT(c8y_api, send_static, 76);
AT(c8y_api, send_custom, 80);
AT(c8y_api, op_template, 84);
AT(c8y_api, op_fragment, 88);
AT(c8y_api, op_device, 92);
AT(c8y_api, op_field_count, 96);
AT(c8y_api, op_field, 100);
AT(c8y_api, op_succeed, 104);
AT(c8y_api, op_succeed_params, 108);
AT(c8y_api, op_fail, 112);
AT(c8y_api, op_cancelled, 116);
AT(c8y_api, op_complete_on_reboot, 120);
AT(c8y_api, msg_id, 124);
AT(c8y_api, msg_field_count, 128);
AT(c8y_api, msg_field, 132);
AT(c8y_api, device_id, 136);
AT(c8y_api, state_dir, 140);
_Static_assert(sizeof(c8y_api) >= 144, "c8y_api shrank");
#if C8Y_ABI_MINOR == 0
_Static_assert(sizeof(c8y_api) == 144, "c8y_api 1.0 must be 144 bytes");
#endif

/* c8y_api 1.1 */
#if C8Y_ABI_MINOR >= 1
AT(c8y_api, download, 144);
AT(c8y_api, upload, 148);
AT(c8y_api, op_resume_after_restart, 152);
AT(c8y_api, op_resumed, 156);
AT(c8y_api, op_rebooted, 160);
AT(c8y_api, add_child_operation, 164);
_Static_assert(sizeof(c8y_api) >= 168, "c8y_api shrank below 1.1");
#endif
#if C8Y_ABI_MINOR == 1
_Static_assert(sizeof(c8y_api) == 168, "c8y_api 1.1 must be 168 bytes");
#endif

#if C8Y_ABI_MINOR >= 1
/* max_bytes and bytes (uint64_t) are 8-aligned: 4 bytes of padding before
 * each of them, and the struct size is a multiple of 8. */
AT(c8y_download, size, 0);
AT(c8y_download, url, 4);
AT(c8y_download, file, 8);
AT(c8y_download, max_bytes, 16);
AT(c8y_download, sha256, 24);
AT(c8y_download, op, 28);
AT(c8y_download, path, 32);
AT(c8y_download, bytes, 544);
AT(c8y_download, http_code, 552);
AT(c8y_download, error, 556);
_Static_assert(sizeof(c8y_download) == 816, "c8y_download 1.1 is 816 bytes");
AT(c8y_upload, size, 0);
AT(c8y_upload, path, 4);
AT(c8y_upload, child_id, 8);
AT(c8y_upload, type, 12);
AT(c8y_upload, text, 16);
AT(c8y_upload, content_type, 20);
AT(c8y_upload, file_name, 24);
AT(c8y_upload, op, 28);
AT(c8y_upload, url, 32);
AT(c8y_upload, http_code, 544);
AT(c8y_upload, error, 548);
_Static_assert(sizeof(c8y_upload) == 804, "c8y_upload 1.1 is 804 bytes");
_Static_assert(sizeof(((c8y_download *)0)->path) == 512 &&
                   sizeof(((c8y_download *)0)->error) == 256 &&
                   sizeof(((c8y_upload *)0)->url) == 512 &&
                   sizeof(((c8y_upload *)0)->error) == 256,
               "transfer buffers");
#endif

/* c8y_api 1.2 */
#if C8Y_ABI_MINOR >= 2
AT(c8y_api, add_fragment_operation, 168);
AT(c8y_api, add_device_operation, 172);
AT(c8y_api, op_id, 176);
AT(c8y_api, op_json, 180);
AT(c8y_api, op_json_value, 184);
AT(c8y_api, op_cancel_reason, 188);
AT(c8y_api, remove_child, 192);
AT(c8y_api, batch_begin, 196);
AT(c8y_api, batch_commit, 200);
AT(c8y_api, batch_discard, 204);
AT(c8y_api, set_health, 208);
AT(c8y_api, platform_auth, 212);
AT(c8y_api, add_template_operation, 216);
_Static_assert(sizeof(c8y_api) >= 220, "c8y_api shrank below 1.2");
AT(c8y_platform_auth, size, 0);
AT(c8y_platform_auth, url, 4);
AT(c8y_platform_auth, authorization, 8);
AT(c8y_platform_auth, base_url, 8200);
AT(c8y_platform_auth, ca_file, 8712);
AT(c8y_platform_auth, ca_path, 9224);
AT(c8y_platform_auth, verify_peer, 9736);
AT(c8y_platform_auth, verify_hostname, 9740);
AT(c8y_platform_auth, error, 9744);
_Static_assert(sizeof(c8y_platform_auth) == 10000,
               "c8y_platform_auth 1.2 is 10000 bytes");
#endif
#if C8Y_ABI_MINOR == 2
_Static_assert(sizeof(c8y_api) == 220, "c8y_api 1.2 must be 220 bytes");
#endif

/* c8y_api 1.3 */
#if C8Y_ABI_MINOR >= 3
AT(c8y_api, config_origin, 220);
_Static_assert(sizeof(c8y_api) >= 224, "c8y_api shrank below 1.3");
#endif
#if C8Y_ABI_MINOR == 3
_Static_assert(sizeof(c8y_api) == 224, "c8y_api 1.3 must be 224 bytes");
#endif

/* c8y_plugin_info 1.0 */
AT(c8y_plugin_info, abi_major, 0);
AT(c8y_plugin_info, abi_minor, 4);
AT(c8y_plugin_info, size, 8);
AT(c8y_plugin_info, name, 12);
AT(c8y_plugin_info, version, 16);
AT(c8y_plugin_info, init, 20);
AT(c8y_plugin_info, fini, 24);
_Static_assert(sizeof(c8y_plugin_info) >= 28, "c8y_plugin_info shrank");
#if C8Y_ABI_MINOR == 0
_Static_assert(sizeof(c8y_plugin_info) == 28,
               "c8y_plugin_info 1.0 must be 28 bytes");
#endif

_Static_assert(sizeof(((c8y_api *)0)->abi_major) == 4, "abi_major is u32");
_Static_assert(sizeof(((c8y_api *)0)->size) == 4, "size is size_t");
_Static_assert(sizeof(((c8y_plugin_info *)0)->abi_minor) == 4,
               "abi_minor is u32");
#endif /* data model */

/* Values are part of the ABI: never renumbered, never reused. */
_Static_assert(C8Y_OK == 0 && C8Y_PENDING == 1, "status values");
_Static_assert(C8Y_EINVAL == -1 && C8Y_ENOMEM == -2 && C8Y_ENOTSUP == -3,
               "status values");
_Static_assert(C8Y_EEXIST == -4 && C8Y_ESTATE == -5 && C8Y_EAGAIN == -6,
               "status values");
_Static_assert(C8Y_EIO == -7 && C8Y_ETIMEDOUT == -8 && C8Y_ETOOBIG == -9,
               "status values");
_Static_assert(C8Y_EHTTP == -10 && C8Y_EAUTH == -11 && C8Y_ENET == -12 &&
                   C8Y_ECHECKSUM == -13 && C8Y_ECANCELED == -14,
               "1.1 status values");
_Static_assert(C8Y_LOG_ERROR == 3 && C8Y_LOG_WARNING == 4 &&
                   C8Y_LOG_NOTICE == 5 && C8Y_LOG_INFO == 6 &&
                   C8Y_LOG_DEBUG == 7,
               "log levels equal syslog priorities");
_Static_assert(C8Y_CRITICAL == 301 && C8Y_MAJOR == 302 && C8Y_MINOR == 303 &&
                   C8Y_WARNING == 304,
               "severities equal the SmartREST alarm templates");
_Static_assert(sizeof(c8y_log_level) == sizeof(int) &&
                   sizeof(c8y_severity) == sizeof(int),
               "enums passed by value are int-sized");

/* The symbol name carries the major. */
_Static_assert(sizeof(C8Y_PLUGIN_SYMBOL_NAME) == sizeof("c8y_plugin_info_v1"),
               "symbol name");

/* So the translation unit is not empty under -Wpedantic. */
int abi_layout_checked(void);
int abi_layout_checked(void) { return 1; }
