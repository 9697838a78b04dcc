# Runs c8y-bench-outq with a small backlog: it must exit 0 and print every
# metric with a number. No timing or memory assertions.
if(NOT BENCH)
  message(FATAL_ERROR "smoke_outq.cmake: pass -DBENCH=<path of c8y-bench-outq>")
endif()
execute_process(COMMAND ${BENCH} --lines 20000
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 110)
message("${out}")
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "c8y-bench-outq exited with ${rc}:\n${err}")
endif()
set(num "[0-9]+(\\.[0-9]+)?")
foreach(metric "backlog RSS MiB above idle per 1M lines"
    "drained RSS MiB above idle" "push lines/s \\(baseline: raw write\\)"
    "drain lines/s \\(baseline: raw read\\)"
    "disk bytes per line, offline \\(base: line\\)"
    "disk bytes per line, online \\(base: line\\)"
    "lines kept of 1M at default max_bytes")
  if(NOT out MATCHES "${metric} +${num}")
    message(FATAL_ERROR "no line for '${metric}' in the output:\n${err}")
  endif()
endforeach()
if(NOT out MATCHES "result: complete")
  message(FATAL_ERROR "the run did not complete:\n${err}")
endif()
