"""Rig profiles: the built-in ones load, and every kind of mistake names its key."""

from __future__ import annotations

from pathlib import Path

import pytest

from hardware.profile import ProfileError, available_profiles, load_profile

JOINT_NAMES = ["waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "gripper"]


def test_builtin_profiles_are_listed() -> None:
    assert {"aloha", "aloha-sim"} <= set(available_profiles())


def test_aloha_has_two_leaders_two_followers_and_four_cameras() -> None:
    profile = load_profile("aloha")
    assert profile.twin is None
    assert profile.rate_hz == 50
    assert sorted(profile.arms_with_role("leader")) == ["leader_left", "leader_right"]
    assert sorted(profile.arms_with_role("follower")) == ["follower_left", "follower_right"]
    follower = profile.arms["follower_left"]
    assert list(follower.joints) == JOINT_NAMES
    assert follower.joints["shoulder"].shadow == 3 and follower.joints["elbow"].shadow == 5
    assert follower.joints["waist"].motor == "XM540-W270"
    assert profile.arms["leader_left"].joints["waist"].motor == "XM430-W350"
    assert all(arm.baudrate == 1_000_000 for arm in profile.arms.values())
    assert sorted(profile.cameras) == ["cam_high", "cam_left_wrist", "cam_low", "cam_right_wrist"]


def test_aloha_sim_inherits_the_arms_and_overrides_ports_and_cameras() -> None:
    real, sim = load_profile("aloha"), load_profile("aloha-sim")
    assert sim.twin is not None and sim.twin.task == "transfer_cube"
    for name, arm in real.arms.items():
        assert sim.arms[name].joints == arm.joints
        assert sim.arms[name].port == "twin"
    assert "cam_low" not in sim.cameras  # switched off with enabled = false
    assert {c.view for c in sim.cameras.values()} == {"top", "left_wrist", "right_wrist"}


def write(tmp_path: Path, text: str, name: str = "custom.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("snippet", "message"),
    [
        (
            '[arms.leader_left.joints]\nwaist = { idd = 1, motor = "XM430-W350" }',
            "arms.leader_left.joints.waist.idd: unknown key",
        ),
        (
            '[arms.leader_left.joints]\nwaist = { id = 1, motor = "XM999" }',
            "arms.leader_left.joints.waist: motor 'XM999'",
        ),
        ('[arms.leader_left.joints]\nwaist = { id = 300, motor = "XM430-W350" }', "id 300 is not a servo id"),
        ('[arms.leader_left.joints]\nwaist = { id = "one", motor = "XM430-W350" }', "waist.id: expected int"),
        ('[arms.leader_left]\nrole = "boss"', "arms.leader_left.role: 'boss' is not one of"),
        ('[arms.leader_left.joints]\nwaist = { id = 2, motor = "XM430-W350" }', "servo ids repeat"),
        ("rate_hz = 0", "rate_hz 0.0 is outside"),
        ('[cameras.cam_high]\nserial = "900000000002"', "camera serials repeat"),
        ("[cameras.cam_high]\nenabled = 1", "cameras.cam_high.enabled: expected true or false"),
        ("[twin]\ntask = 'juggling'", "twin.task: 'juggling' is not one of"),
        ("colour = 'red'", "colour: unknown key"),
    ],
)
def test_mistakes_are_reported_with_their_key(tmp_path: Path, snippet: str, message: str) -> None:
    path = write(tmp_path, f'base = "aloha-sim"\n{snippet}\n')
    with pytest.raises(ProfileError) as error:
        load_profile(path)
    assert message in str(error.value)
    assert str(path) in str(error.value)


def test_missing_key_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, '[arms.a]\nrole = "leader"\nside = "left"\nport = "/dev/x"\n[cameras]\n')
    with pytest.raises(ProfileError, match=r"arms\.a\.joints: missing key"):
        load_profile(path)


def test_unknown_profile_lists_the_builtin_ones() -> None:
    with pytest.raises(ProfileError, match=r"built-in profiles: .*aloha-sim"):
        load_profile("no-such-rig")


def test_invalid_toml_says_so(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="not valid TOML"):
        load_profile(write(tmp_path, "rate_hz = = 3"))


def test_base_loop_is_refused(tmp_path: Path) -> None:
    a = write(tmp_path, f'base = "{tmp_path / "b.toml"}"', "a.toml")
    write(tmp_path, f'base = "{a}"', "b.toml")
    with pytest.raises(ProfileError, match="loops back"):
        load_profile(a)


def test_a_derived_profile_can_retarget_one_camera(tmp_path: Path) -> None:
    path = write(tmp_path, 'base = "aloha"\n[cameras.cam_high]\nserial = "123456789012"\nfps = 60\n')
    profile = load_profile(path)
    assert profile.name == "custom"
    assert profile.cameras["cam_high"].serial == "123456789012"
    assert profile.cameras["cam_high"].fps == 60
    assert profile.cameras["cam_low"].serial == load_profile("aloha").cameras["cam_low"].serial
