"""The fault suite, one test per case of issue #13 (see docs/reliability.md for the table).

The cases run concurrently (runner.py): selecting some (`-k case1`) runs only those.
"""

from __future__ import annotations

import pytest

from tests.faults.runner import Runner

CASE_TIMEOUT_S = 560  # a case's own bound; the concurrent quick form takes ~3 min


@pytest.mark.timeout(CASE_TIMEOUT_S + 20)
def test_case1_ingest_sigkilled_five_times_under_load(fault_runner: Runner) -> None:
    fault_runner.result("case1_ingest_sigkilled_five_times_under_load", CASE_TIMEOUT_S)


@pytest.mark.timeout(CASE_TIMEOUT_S + 20)
def test_case4_agent_sigkilled_and_restarted(fault_runner: Runner) -> None:
    fault_runner.result("case4_agent_sigkilled_and_restarted", CASE_TIMEOUT_S)


@pytest.mark.timeout(CASE_TIMEOUT_S + 20)
def test_case7_aggregator_sigkilled_and_a_member_leaving(fault_runner: Runner) -> None:
    fault_runner.result("case7_aggregator_sigkilled_and_a_member_leaving", CASE_TIMEOUT_S)


@pytest.mark.timeout(CASE_TIMEOUT_S + 20)
def test_case7_idle_close_then_sigkill_keeps_closed_windows_final(fault_runner: Runner) -> None:
    fault_runner.result("case7_idle_close_then_sigkill_keeps_closed_windows_final", CASE_TIMEOUT_S)


@pytest.mark.timeout(CASE_TIMEOUT_S + 20)
def test_case2_broker_paused_then_resumed(fault_runner: Runner) -> None:
    fault_runner.result("case2_broker_paused_then_resumed", CASE_TIMEOUT_S)


@pytest.mark.timeout(CASE_TIMEOUT_S + 20)
def test_case3_sigterm_to_ingest_while_broker_paused(fault_runner: Runner) -> None:
    fault_runner.result("case3_sigterm_to_ingest_while_broker_paused", CASE_TIMEOUT_S)


@pytest.mark.timeout(CASE_TIMEOUT_S + 20)
def test_case6_network_cut_slowed_and_reset(fault_runner: Runner) -> None:
    fault_runner.result("case6_network_cut_slowed_and_reset", CASE_TIMEOUT_S)


@pytest.mark.timeout(CASE_TIMEOUT_S + 20)
def test_case5_agent_spool_disk_full(fault_runner: Runner) -> None:
    fault_runner.result("case5_agent_spool_disk_full", CASE_TIMEOUT_S)


@pytest.mark.timeout(CASE_TIMEOUT_S + 20)
def test_case8_slow_client_idle_streams_and_huge_messages(fault_runner: Runner) -> None:
    fault_runner.result("case8_slow_client_idle_streams_and_huge_messages", CASE_TIMEOUT_S)


@pytest.mark.timeout(CASE_TIMEOUT_S + 20)
def test_case9_ten_thousand_malformed_inputs(fault_runner: Runner) -> None:
    fault_runner.result("case9_ten_thousand_malformed_inputs", CASE_TIMEOUT_S)


@pytest.mark.timeout(CASE_TIMEOUT_S + 20)
def test_case10_security(fault_runner: Runner) -> None:
    fault_runner.result("case10_security", CASE_TIMEOUT_S)


@pytest.mark.timeout(CASE_TIMEOUT_S + 20)
def test_case11_cardinality_attack(fault_runner: Runner) -> None:
    fault_runner.result("case11_cardinality_attack", CASE_TIMEOUT_S)
