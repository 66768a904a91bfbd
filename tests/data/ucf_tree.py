"""Builds small UCF101-format trees for the data tests (tiny MPEG-4 Part 2 AVIs, official split rules)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from vidyn.data.video_io import write_video

# The official classInd.txt order (1-based index = position + 1); checked against the shared copy in
# test_ucf101.py when that file is present.
UCF101_CLASSES = """
ApplyEyeMakeup ApplyLipstick Archery BabyCrawling BalanceBeam BandMarching BaseballPitch Basketball
BasketballDunk BenchPress Biking Billiards BlowDryHair BlowingCandles BodyWeightSquats Bowling
BoxingPunchingBag BoxingSpeedBag BreastStroke BrushingTeeth CleanAndJerk CliffDiving CricketBowling
CricketShot CuttingInKitchen Diving Drumming Fencing FieldHockeyPenalty FloorGymnastics FrisbeeCatch
FrontCrawl GolfSwing Haircut Hammering HammerThrow HandstandPushups HandstandWalking HeadMassage HighJump
HorseRace HorseRiding HulaHoop IceDancing JavelinThrow JugglingBalls JumpingJack JumpRope Kayaking
Knitting LongJump Lunges MilitaryParade Mixing MoppingFloor Nunchucks ParallelBars PizzaTossing
PlayingCello PlayingDaf PlayingDhol PlayingFlute PlayingGuitar PlayingPiano PlayingSitar PlayingTabla
PlayingViolin PoleVault PommelHorse PullUps Punch PushUps Rafting RockClimbingIndoor RopeClimbing Rowing
SalsaSpin ShavingBeard Shotput SkateBoarding Skiing Skijet SkyDiving SoccerJuggling SoccerPenalty
StillRings SumoWrestling Surfing Swing TableTennisShot TaiChi TennisSwing ThrowDiscus TrampolineJumping
Typing UnevenBars VolleyballSpiking WalkingWithDog WallPushups WritingOnBoard YoYo
""".split()
SHARED_CLASSIND = Path("/work/shared/data/ucf101_classInd.txt")

TREE_CLASSES = ("Hammering", "HammerThrow", "HandstandPushups", "JumpingJack", "JumpRope")
TREE_GROUPS = (1, 8, 15, 22)
CLIPS_PER_GROUP = 2
TREE_VIDEOS = [(c, g, k) for c in TREE_CLASSES for g in TREE_GROUPS for k in range(1, CLIPS_PER_GROUP + 1)]
FPS = 25.0
HW = (24, 32)


def official_test_groups(fold: int) -> range:
    """The official rule: split k tests groups 01-07 / 08-14 / 15-21; 22-25 are always train."""
    return range(7 * (fold - 1) + 1, 7 * fold + 1)


def file_name(cls: str, group: int, clip: int, spelling: str | None = None) -> str:
    token = spelling or ("HandStandPushups" if cls == "HandstandPushups" else cls)  # the real files' quirk
    return f"v_{token}_g{group:02d}_c{clip:02d}.avi"


def tiny_frames(video_id: int, num_frames: int, hw: tuple[int, int] = HW) -> np.ndarray:
    """uint8 (T, H, W, 3): a per-video colour square moving right over a gradient, so videos differ."""
    h, w = hw
    rng = np.random.default_rng(video_id)
    base = np.linspace(0, 120, w, dtype=np.float32)[None, :, None] + rng.uniform(0, 60, 3)  # (1, W, 3)
    frames = np.broadcast_to(base, (num_frames, h, w, 3)).copy()
    colour = rng.uniform(150, 255, 3)
    for t in range(num_frames):
        x = (2 * t + video_id) % (w - 8)
        frames[t, h // 2 - 4 : h // 2 + 4, x : x + 8] = colour
    return frames.round().clip(0, 255).astype(np.uint8)


def write_lists(
    root: Path, videos: list[tuple[str, int, int]], spelling: dict[str, str] | None = None
) -> None:
    """classInd.txt (all 101, official numbering) and trainlist0k/testlist0k for the given videos (\\r\\n)."""
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True, exist_ok=True)
    (lists / "classInd.txt").write_bytes(
        "".join(f"{i} {c}\r\n" for i, c in enumerate(UCF101_CLASSES, 1)).encode()
    )
    order = sorted(videos, key=lambda v: (UCF101_CLASSES.index(v[0]), v[1], v[2]))
    for fold in (1, 2, 3):
        train, test = [], []
        for cls, group, clip in order:
            rel = f"{cls}/{file_name(cls, group, clip, (spelling or {}).get(cls))}"
            if group in official_test_groups(fold):
                test.append(f"{rel}\r\n")
            else:
                train.append(f"{rel} {UCF101_CLASSES.index(cls) + 1}\r\n")
        (lists / f"trainlist0{fold}.txt").write_bytes("".join(train).encode())
        (lists / f"testlist0{fold}.txt").write_bytes("".join(test).encode())


def make_ucf_tree(
    root: Path,
    classes: tuple[str, ...] = TREE_CLASSES,
    groups: tuple[int, ...] = TREE_GROUPS,
    clips_per_group: int = CLIPS_PER_GROUP,
    hw: tuple[int, int] = HW,
    frames: tuple[int, int] = (12, 20),
) -> list[tuple[str, int, int]]:
    """Write `ROOT/UCF-101/<Class>/v_..._gGG_cCC.avi` (12-20 frames, 25 fps) and the split lists."""
    videos = [(c, g, k) for c in classes for g in groups for k in range(1, clips_per_group + 1)]
    for i, (cls, group, clip) in enumerate(videos):
        n = frames[0] + i % (frames[1] - frames[0] + 1)
        path = root / "UCF-101" / cls / file_name(cls, group, clip)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_video(path, tiny_frames(i, n, hw), fps=FPS)
    write_lists(root, videos)
    return videos


def clone_lists(src: Path, dst: Path) -> Path:
    """A new root sharing src's videos (symlink) with its own copy of the split lists, for editing."""
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "UCF-101").symlink_to(src / "UCF-101", target_is_directory=True)
    shutil.copytree(src / "ucfTrainTestlist", dst / "ucfTrainTestlist")
    return dst
