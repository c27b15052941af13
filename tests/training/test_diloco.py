"""p2pnode.torch: in-place collectives on tensors and the DiLoCo wrapper, over the in-process
stand-in of the Group API (tests/support/local_group.py). Skipped without torch."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from p2pnode.torch import DiLoCo, GroupChangedError, all_reduce_, broadcast_  # noqa: E402
from tests.support.local_group import LocalGroup, LocalWorld, run_all  # noqa: E402

torch.set_num_threads(1)


def _model(seed: int) -> torch.nn.Module:
    """A tiny MLP whose initial weights come from ``seed`` alone (no global RNG)."""
    net = torch.nn.Sequential(torch.nn.Linear(8, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    return net


def _data(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1000 + seed)
    x = torch.randn(64, 8, generator=gen)
    return x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long()


class Member:
    """One member's model, data and DiLoCo wrapper."""

    def __init__(self, group: LocalGroup, *, init_seed: int, data_seed: int, **kw: object) -> None:
        self.model = _model(init_seed)
        self.x, self.y = _data(data_seed)
        inner = torch.optim.AdamW(self.model.parameters(), lr=0.01)
        opts = {"inner_steps": 4, "codec": "none", **kw}
        self.opt = DiLoCo(self.model, inner, group, **opts)  # type: ignore[arg-type]

    def train(self, steps: int) -> None:
        for _ in range(steps):
            loss = torch.nn.functional.cross_entropy(self.model(self.x), self.y)
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()

    def flat(self) -> np.ndarray:
        return np.concatenate([p.detach().numpy().ravel() for p in self.model.parameters()])


def _members(world: LocalWorld, **kw: object) -> list[Member]:
    return [Member(g, init_seed=0, data_seed=i, **kw) for i, g in enumerate(world.groups)]


def _train_all(members: list[Member], steps: int) -> None:
    by_group = {id(m.opt.group): m for m in members}
    groups = [m.opt.group for m in members]
    run_all(groups, lambda g: by_group[id(g)].train(steps))  # type: ignore[arg-type]


def _assert_identical(members: list[Member]) -> None:
    first = members[0]
    for m in members[1:]:
        assert m.flat().tobytes() == first.flat().tobytes()
        assert m.opt.outer_params.tobytes() == first.opt.outer_params.tobytes()
        assert m.opt.momentum.tobytes() == first.opt.momentum.tobytes()
        assert m.opt.outer_steps == first.opt.outer_steps


# -- all_reduce_ and broadcast_ ------------------------------------------------------------


def test_all_reduce_of_a_list_is_one_call_and_the_same_everywhere() -> None:
    world = LocalWorld(3)
    rng = np.random.default_rng(0)
    values = [[rng.standard_normal(s).astype(np.float32) for s in ((2, 3), (4,))] for _ in range(3)]

    def body(g: LocalGroup) -> list[torch.Tensor]:
        tensors = [torch.from_numpy(v.copy()) for v in values[g.rank]]
        assert all_reduce_(g, tensors, op="mean") is tensors
        return tensors

    out = run_all(world.groups, body)
    for i, shape in enumerate(((2, 3), (4,))):
        expected = (values[0][i] + values[1][i] + values[2][i]) / np.float32(3)
        for member in out:
            assert tuple(member[i].shape) == shape
            np.testing.assert_array_equal(member[i].numpy(), expected)
    assert all(g.stats["ops"] == 1 for g in world.groups)


def test_broadcast_copies_the_roots_values_in_place() -> None:
    world = LocalWorld(3)

    def body(g: LocalGroup) -> torch.Tensor:
        t = torch.full((5,), float(g.rank))
        broadcast_(g, t, root=2)
        return t

    for t in run_all(world.groups, body):
        assert t.tolist() == [2.0] * 5


def test_only_cpu_float32_tensors_are_accepted() -> None:
    g = LocalWorld(1).groups[0]
    with pytest.raises(TypeError, match="float32"):
        all_reduce_(g, torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="no tensors"):
        all_reduce_(g, [])
    assert g.stats["ops"] == 0


# -- the outer step ------------------------------------------------------------------------


@pytest.mark.parametrize("nesterov", [True, False])
def test_outer_steps_match_a_hand_computation_and_torch_sgd(nesterov: bool) -> None:
    """Two members, one parameter vector, inner SGD with lr 1 on gradients we choose: the
    params after H inner steps are known exactly, so is every outer step."""
    world = LocalWorld(2)
    start = np.array([1.0, -2.0, 0.5], np.float32)
    grads = [np.array([0.1, 0.2, -0.3], np.float32), np.array([-0.5, 0.4, 0.05], np.float32)]
    lr, mu, h = 0.7, 0.9, 2

    def body(g: LocalGroup) -> DiLoCo:
        p = torch.nn.Parameter(torch.from_numpy(start.copy()))
        opt = DiLoCo([p], torch.optim.SGD([p], lr=1.0), g, inner_steps=h, outer_lr=lr,
                     outer_momentum=mu, nesterov=nesterov, codec="none")  # fmt: skip
        for _ in range(3 * h):
            p.grad = torch.from_numpy(grads[g.rank].copy())
            opt.step()
        return opt

    opts = run_all(world.groups, body)

    # By hand, in float32: member r's params after H steps are outer - H * grad_r.
    outer = start.copy()
    buf = np.zeros(3, np.float32)
    reference = torch.nn.Parameter(torch.from_numpy(start.copy()))
    sgd = torch.optim.SGD([reference], lr=lr, momentum=mu, nesterov=nesterov)
    for _ in range(3):
        local = [outer - np.float32(h) * g for g in grads]
        pseudo = ((outer - local[0]) + (outer - local[1])) / np.float32(2)
        buf = np.float32(mu) * buf + pseudo
        step = pseudo + np.float32(mu) * buf if nesterov else buf
        outer = outer - np.float32(lr) * step
        reference.grad = torch.from_numpy(pseudo.copy())
        sgd.step()
    for opt in opts:
        np.testing.assert_allclose(opt.outer_params, outer, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(opt.outer_params, reference.detach().numpy(), rtol=1e-6)
        np.testing.assert_array_equal(opt.params[0].detach().numpy(), opt.outer_params)
        assert (opt.outer_steps, opt.inner_steps_done) == (3, 3 * h)
    assert opts[0].outer_params.tobytes() == opts[1].outer_params.tobytes()


@pytest.mark.parametrize("codec", ["none", "fp16", "int8", "topk"])
def test_every_member_ends_with_the_same_state(codec: str) -> None:
    world = LocalWorld(4)
    members = _members(world, codec=codec)
    _train_all(members, 12)
    _assert_identical(members)
    for m in members:
        assert (m.opt.inner_steps_done, m.opt.outer_steps) == (12, 3)
        # One state sync at the first outer step; the states were equal: nothing broadcast.
        assert m.opt.last_sync is not None
        assert not m.opt.last_sync.broadcast
        assert m.opt.last_sync.contributors == 4
        assert m.opt.bytes_sent == m.opt.group.stats["bytes_sent"] > 0


def test_training_lowers_the_loss() -> None:
    world = LocalWorld(2)
    members = _members(world, codec="int8")
    x = torch.cat([members[0].x, members[1].x])
    y = torch.cat([members[0].y, members[1].y])

    def loss() -> float:
        with torch.no_grad():
            return float(torch.nn.functional.cross_entropy(members[0].model(x), y))

    before = loss()
    _train_all(members, 40)
    assert loss() < 0.7 * before


# -- state sync, membership changes, checkpoints ---------------------------------------------


def test_members_that_start_apart_take_the_lowest_ranks_state() -> None:
    world = LocalWorld(3)
    members = [Member(g, init_seed=i, data_seed=i) for i, g in enumerate(world.groups)]
    _train_all(members, 4)
    _assert_identical(members)
    for m in members:
        assert m.opt.last_sync is not None
        assert (m.opt.last_sync.root, m.opt.last_sync.broadcast) == (0, True)
        # Only rank 0's local steps started from the outer params everyone now holds.
        assert m.opt.last_sync.contributors == 1


def test_a_late_member_gets_the_state_and_adds_no_stale_update() -> None:
    """Two members train 2 outer steps; a third with other weights joins. At the next outer
    step the old members see GroupChangedError, refresh and sync: the newcomer gets their state,
    and its pseudo-gradient is left out. So the result equals, bit for bit, a control run of
    the two old members alone."""
    world, control = LocalWorld(2), LocalWorld(2)
    members, alone = _members(world), _members(control)
    _train_all(members, 8)
    _train_all(alone, 12)
    late = Member(world.join(), init_seed=99, data_seed=7)
    assert late.opt.group.rank == 2 and late.opt.group.world_size == 3
    _train_all([*members, late], 4)
    everyone = [*members, late]
    _assert_identical(everyone)
    assert late.flat().tobytes() == alone[0].flat().tobytes()
    assert late.opt.outer_params.tobytes() == alone[0].opt.outer_params.tobytes()
    assert [m.opt.outer_steps for m in everyone] == [3, 3, 3]
    assert [m.opt.recoveries for m in everyone] == [1, 1, 0]
    for m in everyone:
        assert m.opt.last_sync is not None
        assert (m.opt.last_sync.root, m.opt.last_sync.broadcast) == (0, True)
        assert m.opt.last_sync.contributors == 2
    # From the next outer step on, the newcomer contributes like everyone else.
    _train_all(everyone, 4)
    _assert_identical(everyone)
    assert everyone[2].opt.outer_steps == 4


def test_a_member_leaving_is_survived_without_a_broadcast() -> None:
    world = LocalWorld(3)
    members = _members(world)
    _train_all(members, 4)
    members[2].opt.group.leave()
    _train_all(members[:2], 4)
    _assert_identical(members[:2])
    for m in members[:2]:
        assert m.opt.recoveries == 1
        assert m.opt.group.world_size == 2
        assert m.opt.last_sync is not None
        assert not m.opt.last_sync.broadcast
        assert m.opt.last_sync.contributors == 2
        assert m.opt.outer_steps == 2


def test_a_restored_checkpoint_with_more_outer_steps_wins_the_sync() -> None:
    source = LocalWorld(2)
    trained = _members(source)
    _train_all(trained, 12)
    state = trained[1].opt.state_dict()
    assert state["outer_steps"] == 3 and state["inner_steps_done"] == 12
    model_state = trained[1].model.state_dict()

    world = LocalWorld(2)
    members = [Member(g, init_seed=5 + i, data_seed=i) for i, g in enumerate(world.groups)]
    members[1].model.load_state_dict(model_state)
    members[1].opt.load_state_dict(state)
    assert members[1].opt.outer_params.tobytes() == trained[1].opt.outer_params.tobytes()
    _train_all(members, 4)
    _assert_identical(members)
    assert members[0].opt.last_sync is not None
    assert members[0].opt.last_sync.root == 1
    assert [m.opt.outer_steps for m in members] == [4, 4]


def test_too_many_membership_changes_raise_and_leave_the_model_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = LocalWorld(2)
    m = Member(world.groups[0], init_seed=0, data_seed=0, max_retries=2)
    world.join()  # the group re-forms; this member's refresh is made to never catch up
    refreshes: list[int] = []
    monkeypatch.setattr(m.opt.group, "refresh", lambda: refreshes.append(1))
    m.train(3)
    before = m.flat().copy()
    with pytest.raises(GroupChangedError):
        m.opt.outer_step()
    assert len(refreshes) == 2 and m.opt.recoveries == 2
    assert m.flat().tobytes() == before.tobytes()
    assert m.opt.outer_steps == 0


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"inner_steps": 0}, "inner_steps"),
        ({"codec": "zip"}, "codec"),
        ({"outer_lr": 0.0}, "outer_lr"),
        ({"outer_momentum": 1.0}, "outer_momentum"),
        ({"outer_momentum": 0.0, "nesterov": True}, "nesterov"),
    ],
)
def test_bad_settings_are_refused(kw: dict[str, object], match: str) -> None:
    g = LocalWorld(1).groups[0]
    net = _model(0)
    with pytest.raises(ValueError, match=match):
        DiLoCo(net, torch.optim.SGD(net.parameters(), lr=0.1), g, **kw)  # type: ignore[arg-type]


def test_zero_grad_and_param_groups_pass_through() -> None:
    g = LocalWorld(1).groups[0]
    net = _model(0)
    inner = torch.optim.SGD(net.parameters(), lr=0.1)
    opt = DiLoCo(net, inner, g, inner_steps=2)
    net(torch.ones(1, 8)).sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    opt.zero_grad()
    assert all(p.grad is None for p in net.parameters())
    assert opt.param_groups is inner.param_groups


def test_weights_loaded_after_the_wrapper_is_built_are_the_starting_point() -> None:
    world = LocalWorld(1)
    net = _model(0)
    opt = DiLoCo(net, torch.optim.SGD(net.parameters(), lr=0.0), world.groups[0], inner_steps=1)
    net.load_state_dict(_model(7).state_dict())  # after the wrapper: the usual restore order
    loaded = np.concatenate([p.detach().numpy().ravel() for p in net.parameters()])
    net(torch.ones(1, 8)).sum().backward()
    opt.step()  # lr 0: the params do not move, so the pseudo-gradient is exactly zero
    assert opt.outer_steps == 1
    np.testing.assert_array_equal(opt.outer_params, loaded)
