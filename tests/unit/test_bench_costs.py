"""What a run cost, from two snapshots (ordermesh_bench.costs): PostgreSQL's CPU taken
process by process, and each batcher's batches."""

from ordermesh_bench.costs import Snapshot, per_order


def _snapshot(postgres: dict[tuple[int, int], tuple[float, float]]) -> Snapshot:
    return Snapshot(postgres=postgres)


def test_a_backend_that_ended_during_the_run_takes_nothing_off_what_the_others_spent() -> None:
    before = _snapshot({(10, 1): (5.0, 100.0), (11, 1): (40.0, 900.0)})
    # 11 (another client's backend, with 40 s of CPU behind it) ended; 10 spent 0.2 s.
    after = _snapshot({(10, 1): (5.2, 130.0)})
    costs = per_order(before, after, orders=100)
    assert costs["infrastructure_cpu_ms_per_order"]["postgres"] == 2.0
    assert costs["context_switches_per_order"]["postgres"] == 0.3


def test_a_backend_started_during_the_run_counts_whole_even_on_a_reused_pid() -> None:
    before = _snapshot({(10, 1): (5.0, 100.0), (12, 1): (9.0, 50.0)})
    # 12 ended and a new process got its pid (a later start time); 13 is new.
    after = _snapshot({(10, 1): (5.1, 110.0), (12, 7): (0.3, 20.0), (13, 8): (0.1, 10.0)})
    costs = per_order(before, after, orders=10)
    assert costs["infrastructure_cpu_ms_per_order"]["postgres"] == 50.0
    assert costs["context_switches_per_order"]["postgres"] == 4.0


def test_each_hop_reports_its_batches_their_mean_size_and_its_stalls() -> None:
    def batcher(items: float, batches: float, stalls: float) -> dict[str, float]:
        return {
            "ordermesh_batch_size_sum": items,
            "ordermesh_batch_size_count": batches,
            "ordermesh_batch_stalls_total": stalls,
        }

    before = Snapshot(batchers={"order/reserve_stock": batcher(100, 10, 1)})
    after = Snapshot(
        batchers={"order/reserve_stock": batcher(400, 20, 3), "order/idle": batcher(0, 0, 0)}
    )
    hops = per_order(before, after, orders=300)["batch_size_by_hop"]
    assert hops == {"order/reserve_stock": {"batches": 10, "mean_size": 30.0, "stalls": 2}}
