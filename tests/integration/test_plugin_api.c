/* What plugins send through the real core — events, alarms,
 * inventory, custom templates, child devices and their operations, and
 * downstream custom messages. */
#include "fixture.h"

#define CHILD FX_DEVICE "-child"

static void test_child_and_upstream_lines(void) {
  fx f = {0};
  fx_up(&f, "[plugin.itest]\nchild = " CHILD "\nxid = itestxid\n");
  /* The child is announced on the root topic on every connect. */
  g_assert_cmpint(sim_wait_line(f.s, "s/us",
                                "101," CHILD ",itest child,itest_Child", 0,
                                5000),
                  >=, 0);
  g_assert_true(sim_device_exists(f.s, CHILD));

  long root = sim_create_operation(f.s, "511," FX_DEVICE ",emit");
  g_assert_cmpint(fx_wait_op(&f, root, 10000), ==, SIM_OP_SUCCESSFUL);
  const char *lines[] = {"400,itest_Event,\"hello, event\"",
                         "302,itest_Alarm,raised", "306,itest_Alarm",
                         "113,\"a=1\nb=\"\"two\"\"\""};
  for (size_t i = 0; i < G_N_ELEMENTS(lines); i++)
    if (sim_wait_line(f.s, "s/us", lines[i], 0, 5000) < 0)
      g_error("missing on s/us: %s", lines[i]);
  g_assert_cmpint(sim_wait_line(f.s, "s/uc/itestxid", "999,25", 0, 5000), >=,
                  0);

  /* An operation addressed to the child runs with the child as device and
   * its status goes to the child's topic. */
  long child = sim_create_operation(f.s, "511," CHILD ",emit");
  g_assert_cmpint(fx_wait_op(&f, child, 10000), ==, SIM_OP_SUCCESSFUL);
  g_assert_cmpstr(sim_operation_detail(f.s, child), ==, CHILD);
  g_assert_cmpint(sim_wait_line(f.s, "s/us/" CHILD, "501,c8y_Command", 0, 100),
                  >=, 0);
  g_assert_cmpint(sim_wait_line(f.s, "s/us/" CHILD, "400,itest_Event", 0, 5000),
                  >=, 0);
  g_assert_cmpint(sim_wait_line(f.s, "s/uc/itestxid/" CHILD, "999,25", 0, 5000),
                  >=, 0);

  /* Custom downstream records reach the registered message handler. */
  g_assert_cmpint(
      sim_publish(f.s, "s/dc/itestxid", "777,x,\"y, z\"\n778,unhandled"), ==,
      0);
  g_assert_true(agent_proc_wait_log(f.a, "itest: message 777 x y, z", 10000));
  g_assert_true(
      agent_proc_wait_log(f.a, "no handler for message id 778", 5000));
  fx_down(&f);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/plugin-api/child-and-upstream-lines",
                  test_child_and_upstream_lines);
  return g_test_run();
}
