"""infra/machines.py and infra/prices.json: which GPUs fit which machine, and what they cost."""

from __future__ import annotations

import datetime
import json

import pytest

from infra import machines


@pytest.fixture(scope="module")
def table() -> dict:
    return machines.load_price_table()


def test_the_price_table_is_dated_sourced_and_covers_every_machine(table):
    as_of = datetime.date.fromisoformat(table["as_of"])
    assert datetime.date(2024, 1, 1) <= as_of <= datetime.date.today()
    assert "refresh" in table["note"].lower() and "list prices" in table["note"]
    gcp_machines = set(machines.GCP_BUNDLED) | set(machines.GCP_N1_MACHINES)
    assert set(table["gcp"]["machines"]) == gcp_machines
    assert set(table["gcp"]["accelerators"]) == set(machines.GCP_N1_ATTACHABLE)
    assert set(table["aws"]["machines"]) == set(machines.AWS_INSTANCES)
    for cloud in ("gcp", "aws"):
        assert all(url.startswith("https://") for url in table[cloud]["sources"])
        for kind in ("machines", "accelerators"):
            for name, price in table[cloud].get(kind, {}).items():
                assert 0 < price["spot"] < price["on_demand"], name


def test_the_brief_s_machines_are_supported():
    for name in ("a2-highgpu-8g", "a2-ultragpu-8g", "a3-highgpu-8g", "g2-standard-8"):
        assert machines.gcp_shape(name).count >= 1
    assert machines.gcp_shape("n1-standard-8", "nvidia-tesla-t4", 4).count == 4
    assert machines.gcp_shape("n1-standard-8", "NVIDIA_TESLA_V100", 1).accelerator.vertex_name == (
        "NVIDIA_TESLA_V100"
    )
    for name in ("p4d.24xlarge", "p5.48xlarge", "g5.xlarge", "g5.48xlarge", "g6.12xlarge"):
        assert machines.aws_instance(name)[1] >= 1
    assert machines.aws_instance("p5.48xlarge") == ("H100 80GB", 8)


@pytest.mark.parametrize(
    "args, message",
    [
        (("a2-megagpu-16g",), "--machine_type: unknown GCP GPU machine type 'a2-megagpu-16g'"),
        (("a2-highgpu-8g", None, 2), "--accelerator_count: a2-highgpu-8g has 8 x nvidia-tesla-a100 built in; got 2"),
        (("a3-highgpu-8g", "nvidia-l4"), "--accelerator_type: a3-highgpu-8g comes with nvidia-h100-80gb, not nvidia-l4"),
        (("n1-standard-8",), "--accelerator_type is required with n1-standard-8"),
        (("n1-standard-8", "nvidia-l4"), "--accelerator_type: nvidia-l4 cannot be attached to N1 machines"),
        (("n1-standard-8", "tpu-v5"), "--accelerator_type: unknown GPU 'tpu-v5'"),
        (("n1-standard-96", "nvidia-tesla-t4", 2), "--accelerator_count: 2 x nvidia-tesla-t4 allows at most 48 vCPUs; n1-standard-96 has 96"),
        (("n1-standard-8", "nvidia-tesla-v100", 3), "--accelerator_count: n1-standard-8 takes 1, 2, 4, 8 x nvidia-tesla-v100, not 3"),
    ],
)  # fmt: skip
def test_impossible_gpu_choices_are_refused_by_name(args, message):
    with pytest.raises(machines.MachineError) as error:
        machines.gcp_shape(*args)
    assert str(error.value).startswith(message)


def test_costs_add_attached_gpus_and_scale_with_nodes_and_hours(table):
    shape = machines.gcp_shape("n1-standard-8", "nvidia-tesla-t4", 2)
    cost = machines.gcp_cost(
        shape, nodes=3, spot=False, hours=10, price_table=machines.DEFAULT_PRICE_TABLE
    )
    per_node = table["gcp"]["machines"]["n1-standard-8"]["on_demand"]
    per_node += 2 * table["gcp"]["accelerators"]["nvidia-tesla-t4"]["on_demand"]
    assert cost.hourly_per_node == pytest.approx(per_node)
    assert cost.hourly == pytest.approx(3 * per_node)
    assert f"${3 * per_node * 10:,.2f} for 10 h" in cost.lines()[0]
    assert f"as of {table['as_of']}" in cost.lines()[1]
    bundled = machines.gcp_cost(
        machines.gcp_shape("a3-highgpu-8g"), nodes=2, spot=True, hours=1,
        price_table=machines.DEFAULT_PRICE_TABLE,
    )  # fmt: skip
    assert bundled.hourly == pytest.approx(2 * table["gcp"]["machines"]["a3-highgpu-8g"]["spot"])
    aws = machines.aws_cost(
        "p5.48xlarge", nodes=2, spot=False, hours=2, price_table=machines.DEFAULT_PRICE_TABLE
    )
    assert aws.hourly == pytest.approx(2 * table["aws"]["machines"]["p5.48xlarge"]["on_demand"])
    flow = machines.dataflow_cost(
        "n1-standard-4", max_workers=10, hours=1, price_table=machines.DEFAULT_PRICE_TABLE
    )
    rates = table["gcp"]["dataflow"]
    assert flow.hourly == pytest.approx(10 * (4 * rates["vcpu"] + 15 * rates["memory_gb"]))


def test_a_price_table_file_overrides_and_may_lack_prices(tmp_path):
    path = tmp_path / "prices.json"
    path.write_text(
        json.dumps(
            {"as_of": "2030-01-01", "aws": {"machines": {"g6.xlarge": {"on_demand": 2, "spot": 1}}}}
        )
    )
    cost = machines.aws_cost("g6.xlarge", nodes=2, spot=True, hours=3, price_table=str(path))
    assert (
        cost.hourly == 2 and "$6.00 for 3 h" in cost.lines()[0] and "2030-01-01" in cost.lines()[1]
    )
    missing = machines.aws_cost("g5.xlarge", nodes=1, spot=True, hours=1, price_table=str(path))
    assert missing.hourly is None
    assert missing.lines() == [f"estimated cost: unknown (no spot price for g5.xlarge in {path})"]


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "is not valid JSON"),
        ('{"aws": {}}', "has no 'as_of' date: prices must say when they were true"),
    ],
)
def test_bad_price_tables_are_refused(content, message, tmp_path):
    path = tmp_path / "prices.json"
    path.write_text(content)
    with pytest.raises(machines.PriceTableError, match=message):
        machines.load_price_table(str(path))


def test_dataflow_workers_must_be_a_priced_family():
    assert machines.dataflow_worker("n2-highmem-8") == (8, 64.0)
    with pytest.raises(
        machines.MachineError, match="unsupported Dataflow worker type 'a2-highgpu-8g'"
    ):
        machines.dataflow_worker("a2-highgpu-8g")
