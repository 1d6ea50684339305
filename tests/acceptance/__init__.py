"""Acceptance tests: the failure matrix (numbered below) against real processes.

Where each row of the matrix is proved (``e2e/`` is the end-to-end suite next door):

1. proxy SIGKILL under load: test_proxy_crashes::test_proxy_sigkill_under_load
2. crash after commit, before response: test_proxy_crashes::test_crash_point (writer.after_commit,
   callbacks.before_response, invoker.after_send)
3. crash before commit: test_proxy_crashes::test_crash_point (ingress.before_commit, writer.before_commit)
4. handler SIGKILL mid-step: test_handler_failures::test_handler_sigkill_mid_step_under_load, e2e/test_handler_crash
5. proxy killed while a handler runs: e2e/test_proxy_crash::test_old_attempts_late_ack_after_proxy_restart_is_fenced
6. handler HTTP 500/502, retry limit: e2e/test_misbehaving_handler
7. 503 + Retry-After: test_handler_failures::test_retry_after_is_honoured
8. garbage answers: e2e/test_misbehaving_handler (garbage, schema, wrongtype, truncated)
9. handler hangs or drips: test_handler_failures::test_hanging_or_dripping_handler_times_out_without_leaks,
   e2e/test_misbehaving_handler::test_hanging_attempt_is_abandoned_and_its_late_ack_fenced
10. handler down: test_handler_failures::test_handler_down_is_retried_with_capped_backoff_and_little_cpu
11. poison handler, resume after a fix: test_handler_failures::test_poison_handler_is_paused_after_bounded_...
12. ingress body over the limit: test_ingress_edges::test_oversized_body_gets_413_with_bounded_memory
13. response / step result over the cap: test_handler_failures::test_response_over_cap_pauses_at_once,
    test_step_result_...
14. and 15. bad input, unknown targets: test_ingress_edges::test_bad_requests_get_4xx_json_and_change_nothing
16. 64 concurrent calls with one idempotency key: e2e/test_idempotency
17. same key, other target or body: test_ingress_edges::test_idempotency_key_is_scoped_to_the_target
18. map full: test_storage_full::test_map_full_gives_507_..., test_map_grows_up_to_its_maximum
19. disk full (RLIMIT_FSIZE): test_storage_full::test_disk_full_fails_writes_keeps_reads_and_recovers
20. wall clock jumps: test_clock_jumps
21. slowloris / 408: test_ingress_edges::test_slow_clients_do_not_block_others_and_slow_bodies_get_408
22. client disconnects mid-call: test_ingress_edges::test_client_disconnect_mid_call_then_attach
23. non-deterministic replay (570): e2e/test_journal_mismatch
24. SIGTERM: test_proxy_crashes::test_sigterm_under_load_loses_nothing, e2e/test_sigterm
25. chaos soak (45 s of nemesis by default, CHAOS_SECONDS to change it): test_chaos
"""
