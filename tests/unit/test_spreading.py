"""What makes calls spread over replicas: the targets clients dial, their balancing
policy, the servers' connection age, and the ports of a local mesh with replicas."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from pydantic import ValidationError
from rich.console import Console

from ordermesh_cli.dashboard import mesh_table
from ordermesh_cli.mesh import Child, LocalMesh, MeshConfig
from ordermesh_cli.ports import parse_replicas
from ordermesh_client.channels import service_config
from ordermesh_order.config import OrderSettings
from ordermesh_platform.clients import channel_options
from ordermesh_platform.devcerts import service_dns_names
from ordermesh_platform.server import server_options
from ordermesh_platform.service_names import SERVICE_NAMES
from ordermesh_platform.settings import ServiceSettings
from ordermesh_platform.targets import grpc_target, target_authority


@pytest.mark.parametrize(
    ("address", "target"),
    [
        ("127.0.0.1:50052", "127.0.0.1:50052"),
        ("inventory:50052", "inventory:50052"),
        ("127.0.0.1:50052,127.0.0.1:50162", "ipv4:127.0.0.1:50052,127.0.0.1:50162"),
        (" 127.0.0.1:1 , 127.0.0.1:2 ", "ipv4:127.0.0.1:1,127.0.0.1:2"),
        ("dns:///inv-headless.shop.svc:50051", "dns:///inv-headless.shop.svc:50051"),
        ("ipv4:10.0.0.1:1,10.0.0.2:1", "ipv4:10.0.0.1:1,10.0.0.2:1"),
    ],
)
def test_addresses_become_grpc_targets_that_name_every_replica(address: str, target: str) -> None:
    assert grpc_target(address) == target


@pytest.mark.parametrize(
    "address", ["", "inventory-0:1,inventory-1:1", "127.0.0.1:1,127.0.0.1", "127.0.0.1:0,1.2.3.4:5"]
)
def test_a_list_of_anything_but_ipv4_literals_is_refused(address: str) -> None:
    with pytest.raises(ValueError, match=r"address|dns:///"):
        grpc_target(address)


def test_order_settings_take_a_replica_list_and_refuse_a_bad_one() -> None:
    settings = OrderSettings(inventory_addr="127.0.0.1:1,127.0.0.1:2")
    assert settings.inventory_addr == "ipv4:127.0.0.1:1,127.0.0.1:2"
    with pytest.raises(ValidationError, match="dns:///"):
        OrderSettings(payment_addr="payment-a:1,payment-b:1")


def test_a_channel_to_several_replicas_presents_the_first_as_its_authority() -> None:
    # The TLS name checked against each replica's certificate (127.0.0.1 locally).
    target = grpc_target("127.0.0.1:1,127.0.0.1:2")
    assert target_authority(target) == "127.0.0.1:1"
    assert ("grpc.default_authority", "127.0.0.1:1") in channel_options(ServiceSettings(), target)
    assert target_authority("dns:///inv-headless.shop.svc:50051") is None
    assert target_authority("127.0.0.1:1") is None


def test_clients_balance_round_robin_by_default_keeping_the_retry_budget() -> None:
    options = dict(channel_options(ServiceSettings()))
    config = json.loads(str(options["grpc.service_config"]))
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    assert config["retryThrottling"] == {"maxTokens": 10, "tokenRatio": 0.1}
    assert config["methodConfig"][0]["retryPolicy"]["retryableStatusCodes"]
    assert json.loads(service_config("pick_first"))["loadBalancingConfig"] == [{"pick_first": {}}]
    with pytest.raises(ValidationError):
        ServiceSettings(client_lb_policy="random")


def test_servers_age_connections_out_after_the_set_time_and_grace() -> None:
    defaults = dict(server_options(ServiceSettings()))
    assert defaults["grpc.max_connection_age_ms"] == 30_000
    assert defaults["grpc.max_connection_age_grace_ms"] == 30_000
    short = dict(
        server_options(ServiceSettings(max_connection_age_s=1.5, max_connection_age_grace_s=0))
    )
    assert short["grpc.max_connection_age_ms"] == 1_500
    assert short["grpc.max_connection_age_grace_ms"] == 0
    never = dict(server_options(ServiceSettings(max_connection_age_s=0)))
    assert "grpc.max_connection_age_ms" not in never


def test_replica_counts_are_parsed_and_checked() -> None:
    assert parse_replicas("inventory=2, payment=3") == {"inventory": 2, "payment": 3}
    assert parse_replicas("") == {}
    for bad in ("inventory", "inventory=two", "inventory=-1"):
        with pytest.raises(ValueError, match="<service>=<count>"):
            parse_replicas(bad)
    with pytest.raises(ValueError, match="no service named"):
        MeshConfig(replicas={"shipping": 2})
    with pytest.raises(ValueError, match="choose 1 to 10"):
        MeshConfig(replicas={"inventory": 11})
    with pytest.raises(ValueError, match="reach"):
        MeshConfig(base_port=65400, replicas={"payment": 2})


def test_replicas_get_consecutive_ports_that_meet_no_other_port_of_the_mesh() -> None:
    config = MeshConfig(base_port=50051, replicas=dict.fromkeys(SERVICE_NAMES, 10))
    ports = config.ports()
    assert len(ports) == len(set(ports)) == 4 * 10 * 2 + 1
    assert config.broker_port == 50091
    assert 50091 in ports
    assert [config.port("inventory", r) for r in range(4)] == [50052, 50162, 50163, 50164]
    assert [config.metrics_port("inventory", r) for r in range(3)] == [50062, 50262, 50263]
    # Replica 0 keeps the ports a mesh without replicas has.
    single = MeshConfig(base_port=50051)
    assert sorted(single.ports()) == [50051, 50052, 50053, 50054, 50061, 50062, 50063, 50064, 50091]


def test_callers_are_given_every_replica() -> None:
    config = MeshConfig(replicas={"inventory": 2})
    assert config.address("inventory") == "ipv4:127.0.0.1:50052,127.0.0.1:50162"
    assert config.address("payment") == "127.0.0.1:50053"
    env = LocalMesh(config).service_env("order")
    assert env["ORDERMESH_INVENTORY_ADDR"] == "ipv4:127.0.0.1:50052,127.0.0.1:50162"
    second = LocalMesh(config).service_env("inventory", 1)
    assert (second["ORDERMESH_GRPC_PORT"], second["ORDERMESH_METRICS_PORT"]) == ("50162", "50262")


def test_the_dashboard_shows_each_replica(tmp_path: Path) -> None:
    mesh = LocalMesh(MeshConfig(state_dir=tmp_path, replicas={"payment": 2}))
    c = mesh.config
    for pid, (name, replica) in enumerate((("order", 0), ("payment", 0), ("payment", 1))):
        process = SimpleNamespace(pid=1000 + pid)  # only its pid is shown
        mesh.children.append(
            Child(
                name,
                c.replica_address(name, replica),
                process,  # type: ignore[arg-type]
                tmp_path / f"{name}.log",
                c.metrics_port(name, replica),
                replica,
                c.replica_count(name),
            )
        )
    console = Console(width=200, record=True)
    console.print(mesh_table(mesh))
    lines = console.export_text().splitlines()
    rows = {line.split("│")[1].strip(): line for line in lines if line.startswith("│")}
    assert {"order", "payment/0", "payment/1"} <= set(rows), rows
    assert "127.0.0.1:50172" in rows["payment/1"]


def test_service_certificates_carry_the_headless_names_callers_dial() -> None:
    names = service_dns_names("inventory", "shop")
    assert "ordermesh-inventory-headless.shop.svc" in names
    assert "ordermesh-inventory-headless.shop.svc.cluster.local" in names
