# Runs c8y-bench with tiny sizes: it must exit 0 and print every metric with
# a number in the agent and baseline columns. No timing assertions.
if(NOT BENCH)
  message(FATAL_ERROR "smoke.cmake: pass -DBENCH=<path of c8y-bench>")
endif()
execute_process(
  COMMAND ${BENCH} --lines 3000 --ops 10 --idle-ms 300 --timeout-s 60 --children 50
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 170)
message("${out}")
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "c8y-bench exited with ${rc}:\n${err}")
endif()
set(num "[0-9]+(\\.[0-9]+)?")
foreach(metric
    "idle VmRSS KiB" "idle VmHWM KiB" "idle Pss KiB" "idle threads"
    "stop when idle ms \\(SIGTERM->exit\\)"
    "op fdatasyncs per op \\(base: 2 steps\\)"
    "qos1 lines/s \\(start->last line\\)" "qos1 messages/s \\(start->last line\\)"
    "qos1 CPU ms per 1000 lines"
    "qos0 lines/s \\(start->last line\\)" "qos0 messages/s \\(start->last line\\)"
    "qos0 CPU ms per 1000 lines"
    "op qos1 latency p50 ms" "op qos1 latency p99 ms" "op qos0 latency p50 ms" "op qos0 latency p99 ms"
    "op qos1 latency p50 ms, no-delay broker" "registration of 50 children ms"
    "registration of 50 children messages")
  if(NOT out MATCHES "${metric} +${num} +${num} +${num}")
    message(FATAL_ERROR "no complete line for '${metric}' in the output:\n${err}")
  endif()
endforeach()
if(NOT out MATCHES "result: complete")
  message(FATAL_ERROR "the run did not complete:\n${err}")
endif()
