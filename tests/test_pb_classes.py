"""Classes defined in a `.pb` python block load, and their instances survive a resume.

Each agent's python blocks run as a real module (registered in sys.modules
under a name derived from the program path and the agent), so a class has a
module and a qualname; a checkpoint names them and a resumed process gets an
instance of the same class back, not a dict.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from killing import child_env

from playbooks.agents.agent import Agent, module_name
from playbooks.cli import main
from playbooks.durability.serialization import NotCheckpointed, decode, encode
from playbooks.language import load_program

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"

SHOP = '''# Shop
Keeps an order in a dataclass across awaits.

## Python playbooks

```python
from dataclasses import dataclass, field

import pydantic


@dataclass
class Order:
    item: str
    qty: int
    notes: list[str] = field(default_factory=list)

    def total(self) -> int:
        return self.qty * 3


class Customer(pydantic.BaseModel):
    name: str
    vip: bool = False


class Basket:
    """A plain class: its instances are their attributes."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.orders: list[Order] = []


@playbook
async def MakeOrder(item: str) -> Order:
    return Order(item, 2)


@playbook(triggers=["At the beginning"])
async def Main() -> str:
    order = await MakeOrder("tea")
    basket = Basket("ada")
    basket.orders.append(order)
    await Say("user", f"order made: {order.item}")
    order.notes.append("hot")
    kinds = f"{type(order).__name__} {isinstance(order, Order)} {type(basket).__name__}"
    await Say("user", f"{kinds} total {order.total()} notes {order.notes}")
    await Say("user", f"basket of {basket.owner}: {type(basket.orders[0]).__name__}")
    return order.item
```
'''
EXPECTED = [
    "order made: tea",
    "Order True Basket total 6 notes ['hot']",
    "basket of ada: Order",
]


def write(tmp_path: Path) -> tuple[Path, Path]:
    program = tmp_path / "shop.pb"
    program.write_text(SHOP)
    config = tmp_path / "playbooks.toml"
    config.write_text(
        f'[durability]\nenabled = true\npath = "{tmp_path / "ckpt"}"\nfsync = false\n'
    )
    return program, config


def says(out: str) -> list[str]:
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return [e["text"] for e in lines if e["event"] == "say"]


def test_a_dataclass_in_a_python_block_loads_as_a_real_module(tmp_path: Path) -> None:
    program, _ = write(tmp_path)
    spec = load_program(program).agents[0]
    agent = Agent.load(spec, str(program))
    order_cls = agent.python_globals["Order"]
    name = module_name(str(program), "Shop")
    assert order_cls.__module__ == name and order_cls.__qualname__ == "Order"
    assert sys.modules[name].Order is order_cls
    assert sys.modules[name].__file__ == str(program.resolve())
    assert module_name(str(program), "Shop") == name  # stable: a resumed process finds it
    assert order_cls("x", 1).total() == 3


def test_instances_round_trip_as_the_same_type(tmp_path: Path) -> None:
    program, _ = write(tmp_path)
    ns = Agent.load(load_program(program).agents[0], str(program)).python_globals
    order = ns["Order"]("tea", 2, ["hot"])
    basket = ns["Basket"]("ada")
    basket.orders.append(order)
    values = [order, ns["Customer"](name="ada", vip=True), basket]
    for value in values:
        out = decode(json.loads(json.dumps(encode(value))))
        assert type(out) is type(value)
        assert vars(out) == vars(value) if type(value).__name__ == "Basket" else out == value
    data = json.loads(json.dumps(encode(order)))
    assert data["cls"] == f"{type(order).__module__}:Order"
    del sys.modules[type(order).__module__]  # a process that never loaded the program
    lost = decode(data)
    assert isinstance(lost, NotCheckpointed)
    with pytest.raises(RuntimeError, match="is not loaded"):
        lost.item  # noqa: B018


def test_the_cli_runs_it(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    program, config = write(tmp_path)
    assert main(["run", str(program), "--config", str(config), "--json"]) == 0
    assert says(capsys.readouterr().out) == EXPECTED


@pytest.mark.parametrize("effect", [2, 3, 4])
def test_a_killed_run_resumes_with_instances_of_the_same_type(tmp_path: Path, effect: int) -> None:
    program, config = write(tmp_path)
    cmd = [sys.executable, "-m", "playbooks.cli", "run", str(program), "--config", str(config)]
    cmd.append("--json")
    crash = {"PLAYBOOKS_CRASH_AT": f"effect:{effect}"}
    killed = subprocess.run(cmd, cwd=tmp_path, env=child_env(crash), capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr
    done = subprocess.run(cmd, cwd=tmp_path, env=child_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "resuming" in done.stderr
    assert says(killed.stdout) + says(done.stdout) == EXPECTED
