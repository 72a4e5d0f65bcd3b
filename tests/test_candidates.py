"""Candidates and accept (issue 16): `candidates: k` makes k originals with seeds seed, seed+1, …
(skipping rejected ones), bills k images, writes no output until `imgbuild accept` pins one by
digest; check and CI builds fail while a target is pending.

Over the emulator (real HTTP on 127.0.0.1): billed counts come from the emulator itself.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_support import KEY
from helpers import Result, run
from PIL import Image

from imgbuild.emulator import Emulator, EmulatorConfig
from imgbuild.spec.expand import derive_seed
from imgbuild.store.originals import Cache

PROJECT = """\
version: 1
output_dir: out
images:
  - name: hero
    model: qwen-image-plus
    size: "1664*928"
    prompt: {prompt}
    candidates: 3
  - name: plain
    model: qwen-image-plus
    size: "1664*928"
    prompt: A plain grey wall.
"""


@pytest.fixture
def emu(monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    with Emulator(EmulatorConfig(task_duration=0.05), api_key=KEY) as server:
        monkeypatch.setenv("DASHSCOPE_API_KEY", KEY)
        monkeypatch.setenv("DASHSCOPE_HTTP_BASE_URL", server.base_url)
        monkeypatch.delenv("CI", raising=False)
        yield server


def project(tmp_path: Path, prompt: str = "A red fox in the snow.") -> Path:
    (tmp_path / "imgbuild.yaml").write_text(PROJECT.format(prompt=prompt), encoding="utf-8")
    return tmp_path


def cli(capsys: pytest.CaptureFixture[str], root: Path, *args: str) -> Result:
    return run(capsys, args[0], "-C", str(root), *args[1:])


def lock(root: Path) -> dict:
    return json.loads((root / "imgbuild.lock").read_text("utf-8"))


def pixels(data: bytes) -> bytes:
    with Image.open(io.BytesIO(data)) as im:
        return im.convert("RGB").tobytes()


def without_provenance(png: bytes) -> bytes:
    """The output minus the iTXt chunks imgbuild inserts right after IHDR (it never re-encodes
    a PNG original): the original's exact bytes."""
    import struct

    end = 8 + 12 + struct.unpack(">I", png[8:12])[0]  # signature + IHDR
    rest = end
    while png[rest + 4:rest + 8] == b"iTXt":
        rest += 12 + struct.unpack(">I", png[rest:rest + 4])[0]
    assert rest > end, "no provenance chunks after IHDR"
    return png[:end] + png[rest:]


def cached_original(key: str) -> bytes:
    with Cache(Path(os.environ["IMGBUILD_CACHE_DIR"])) as cache:
        found = cache.get(key)
    assert found is not None
    return found[0][0]


def test_three_candidates_bill_three_then_accept_pins_the_pick_by_digest(
        tmp_path: Path, emu: Emulator, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    root = project(tmp_path)
    plan = cli(capsys, root, "plan", "--provider", "dashscope", "--json")
    assert plan.json["cost"]["by_model"]["qwen-image-plus"]["images"] == 4  # 3 candidates + plain

    r = cli(capsys, root, "build", "--provider", "dashscope", "--json")
    assert r.code == 0, r
    assert emu.billed == 4 and r.json["images_bought"] == 4
    assert not (root / "out" / "hero.png").exists() and (root / "out" / "plain.png").exists()
    assert [t["status"] for t in r.json["targets"] if t["name"] == "hero"] == ["pending"]
    record = lock(root)["pending"]["hero"]
    base = derive_seed("hero")
    assert [c["seed"] for c in record["candidates"]] == [base, base + 1, base + 2]
    assert len({c["sha256"] for c in record["candidates"]}) == 3
    assert "hero.png" not in lock(root)["outputs"]

    c = cli(capsys, root, "check", "--allow-drafts")
    assert c.code == 1 and "hero" in c.out and "pending: 3 candidates" in c.out, c

    requests = len(emu.requests)
    a = cli(capsys, root, "accept", "hero", "--pick", "2", "--json")
    assert a.code == 0, a
    assert len(emu.requests) == requests  # accept makes no call
    chosen = record["candidates"][1]
    original = cached_original(chosen["key"])
    assert hashlib.sha256(original).hexdigest() == chosen["sha256"]
    written = (root / "out" / "hero.png").read_bytes()
    assert hashlib.sha256(without_provenance(written)).hexdigest() == chosen["sha256"]  # its very bytes
    assert pixels(written) == pixels(original)
    entry = lock(root)["outputs"]["hero.png"]
    assert (entry["original"], entry["seed"], entry["picked_from"]) == (chosen["sha256"], base + 1, 3)
    assert "hero" not in lock(root).get("pending", {})
    assert cli(capsys, root, "check", "--allow-drafts").code == 0

    r = cli(capsys, root, "build", "--provider", "dashscope", "--json")
    assert (r.code, r.json["provider_calls"]) == (0, 0) and len(emu.requests) == requests

    # Pinned by digest: the service now gives other bytes for the same seed, the output is
    # gone, and the rebuild still restores the accepted bytes with no call.
    emu.configure(image_salt="another day")
    (root / "out" / "hero.png").unlink()
    r = cli(capsys, root, "build", "--provider", "dashscope", "--json")
    assert (r.code, r.json["provider_calls"], r.json["restored"]) == (0, 0, 1), r
    assert len(emu.requests) == requests
    assert without_provenance((root / "out" / "hero.png").read_bytes()) == original

    # A prompt edit: the pin no longer applies; 3 new candidates, pending again
    project(tmp_path, "A red fox in the rain.")
    p = cli(capsys, root, "plan", "--provider", "dashscope")
    assert "pending" in p.out and "{+rain.+}" in p.out, p
    r = cli(capsys, root, "build", "--provider", "dashscope", "--json")
    assert r.code == 0 and emu.billed == 7, r
    new = lock(root)["pending"]["hero"]["candidates"]
    assert len(new) == 3 and not {c["sha256"] for c in new} & {c["sha256"] for c in record["candidates"]}
    assert cli(capsys, root, "check", "--allow-drafts").code == 1

    # The salted service really answers the pick's request (its seed) with other bytes: a project
    # asking for exactly that request, with an empty cache, gets a different image.
    other = tmp_path / "other"
    other.mkdir()
    (other / "imgbuild.yaml").write_text(PROJECT.format(prompt="A red fox in the snow.").replace(
        "candidates: 3", f"seed: {base + 1}"), encoding="utf-8")
    monkeypatch.setenv("IMGBUILD_CACHE_DIR", str(tmp_path / "other-cache"))
    assert cli(capsys, other, "build", "--provider", "dashscope").code == 0
    assert lock(other)["outputs"]["hero.png"]["key"] == chosen["key"]  # the same request...
    assert pixels((other / "out" / "hero.png").read_bytes()) != pixels(original)  # ...other pixels


def test_reject_asks_for_seeds_never_asked_before(
        tmp_path: Path, emu: Emulator, capsys: pytest.CaptureFixture[str]) -> None:
    root = project(tmp_path)
    assert cli(capsys, root, "build", "--provider", "dashscope").code == 0
    old = {c["seed"] for c in lock(root)["pending"]["hero"]["candidates"]}
    r = cli(capsys, root, "reject", "hero")
    assert r.code == 0, r
    assert cli(capsys, root, "build", "--provider", "dashscope").code == 0
    assert emu.billed == 4 + 3
    new = {c["seed"] for c in lock(root)["pending"]["hero"]["candidates"]}
    assert len(new) == 3 and not new & old
    # accept, then reject the pick: the next 3 avoid all 6 seeds seen so far
    assert cli(capsys, root, "accept", "hero", "--pick", "1").code == 0
    assert cli(capsys, root, "reject", "hero").code == 0
    assert cli(capsys, root, "build", "--provider", "dashscope").code == 0
    third = {c["seed"] for c in lock(root)["pending"]["hero"]["candidates"]}
    assert len(third) == 3 and not third & (old | new) and emu.billed == 10


def test_ci_build_with_a_pending_target_exits_1_and_accepts_nothing(
        tmp_path: Path, emu: Emulator, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    root = project(tmp_path)
    monkeypatch.setenv("CI", "true")
    r = cli(capsys, root, "build", "--provider", "dashscope", "--json")
    assert r.code == 1, r
    assert not (root / "out" / "hero.png").exists()
    assert "hero.png" not in lock(root)["outputs"] and len(lock(root)["pending"]["hero"]["candidates"]) == 3
    r = cli(capsys, root, "build", "--provider", "dashscope")  # candidates cached: still pending
    assert r.code == 1 and "pending" in r.out and emu.billed == 4, r


# --- over the placeholder: the flag, the choices, the mistakes ---------------------------------

PLAIN = """\
version: 1
provider: placeholder
images:
  - name: a
    prompt: First.
  - name: b
    prompt: Second.
    formats: [webp]
    widths: [320]
"""


def test_build_candidates_flag_accept_by_digest_and_all_first(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    (tmp_path / "imgbuild.yaml").write_text(PLAIN, encoding="utf-8")
    r = cli(capsys, tmp_path, "build", "--candidates", "2", "--json")
    assert r.code == 0 and r.json["built"] == 0, r
    pending = lock(tmp_path)["pending"]
    assert set(pending) == {"a", "b"} and all(len(p["candidates"]) == 2 for p in pending.values())
    listing = cli(capsys, tmp_path, "accept", "a")
    assert listing.code == 2 and "imgbuild accept a --pick 2" in listing.out, listing
    shown = tmp_path / ".imgbuild" / "candidates" / "a" / "2.png"
    assert str(shown) in listing.out and hashlib.sha256(shown.read_bytes()).hexdigest() == pending["a"]["candidates"][1]["sha256"]
    prefix = pending["a"]["candidates"][1]["sha256"][:10]
    assert cli(capsys, tmp_path, "accept", "a", "--digest", prefix).code == 0
    assert lock(tmp_path)["outputs"]["a.png"]["original"].startswith(prefix)
    assert cli(capsys, tmp_path, "accept", "--all-first").code == 0
    assert lock(tmp_path)["outputs"]["b.png"]["seed"] == derive_seed("b")
    assert (tmp_path / "generated" / "b-320.webp").exists()  # derivatives of the pick
    bad = cli(capsys, tmp_path, "accept", "a", "--pick", "1")
    assert bad.code == 2 and "not pending" in bad.err, bad
    # without the flag the spec says candidates: 1, and the accepted images simply stay
    assert cli(capsys, tmp_path, "build", "--candidates", "2").code == 0
    assert cli(capsys, tmp_path, "check", "--allow-drafts").code == 0


@pytest.mark.parametrize(("field", "message"), [
    ("candidates: 9", "candidates"),
    ("candidates: 2\n    model: qwen-image-2.0\n    n: 2\n    output: 'a-{{ index }}.png'", "needs n: 1"),
])
def test_bad_candidates_are_located_spec_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                field: str, message: str) -> None:
    (tmp_path / "imgbuild.yaml").write_text(
        f"version: 1\nprovider: placeholder\nimages:\n  - name: a\n    prompt: x\n    {field}\n", encoding="utf-8")
    r = cli(capsys, tmp_path, "validate")
    assert r.code == 2 and "imgbuild.yaml:" in r.err and message in r.err, r


def test_cache_prune_keeps_the_candidates_waiting_for_a_pick(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    (tmp_path / "imgbuild.yaml").write_text(PLAIN, encoding="utf-8")
    assert cli(capsys, tmp_path, "build", "--candidates", "3").code == 0
    r = run(capsys, "cache", "prune", "-C", str(tmp_path), "--yes", "--json")
    assert r.code == 0, r
    keys = [c["key"] for p in lock(tmp_path)["pending"].values() for c in p["candidates"]]
    for key in keys:
        cached_original(key)


def test_accept_at_a_terminal_lists_then_asks_for_the_number(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import pty
    import subprocess
    import sys

    monkeypatch.delenv("CI", raising=False)
    (tmp_path / "imgbuild.yaml").write_text(PLAIN, encoding="utf-8")
    assert cli(capsys, tmp_path, "build", "--candidates", "3", "a").code == 0
    leader, follower = pty.openpty()  # stdin is a terminal; the answer is typed ahead
    os.write(leader, b"3\n")
    try:
        done = subprocess.run([sys.executable, "-c", "import sys; from imgbuild.cli import main; sys.exit(main())",
                               "accept", "a", "-C", str(tmp_path)], stdin=follower,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    finally:
        os.close(leader)
        os.close(follower)
    out = done.stdout.decode()
    assert done.returncode == 0 and "imgbuild accept a --pick 3" in out and "1 accepted" in out, (out, done.stderr)
    assert lock(tmp_path)["outputs"]["a.png"]["seed"] == derive_seed("a") + 2


def test_a_pick_made_among_drafts_never_passes_for_the_real_image(
        tmp_path: Path, emu: Emulator, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Picked while the provider was the placeholder: once the real provider is configured the
    draft pin does not apply (a draft's composition says nothing of the real image's), the
    target is pending again with k real candidates, and check fails until one is accepted."""
    root = project(tmp_path)
    assert cli(capsys, root, "build", "--provider", "placeholder").code == 0
    assert cli(capsys, root, "accept", "hero", "--pick", "2").code == 0
    draft = lock(root)["outputs"]["hero.png"]
    assert draft["draft"] is True and draft["picked_from"] == 3
    assert cli(capsys, root, "check", "--allow-drafts").code == 0
    assert emu.billed == 0

    p = cli(capsys, root, "plan", "--provider", "dashscope", "--json")
    assert p.json["cost"]["by_model"]["qwen-image-plus"]["images"] == 4, p  # 3 real candidates + plain
    p = cli(capsys, root, "plan", "--provider", "dashscope")
    assert "the accepted pick is a draft" in p.out, p
    monkeypatch.setenv("CI", "true")  # CI does not pick either
    r = cli(capsys, root, "build", "--provider", "dashscope", "--json")
    assert r.code == 1 and emu.billed == 4, r
    assert [t["status"] for t in r.json["targets"] if t["name"] == "hero"] == ["pending"]
    monkeypatch.delenv("CI")
    record = lock(root)["pending"]["hero"]
    assert len(record["candidates"]) == 3 and record["provider"] != "placeholder"
    assert lock(root)["outputs"]["hero.png"]["key"] == draft["key"]  # nothing accepted for us
    for flags in ((), ("--allow-drafts",)):  # pending, whatever drafts are allowed
        c = cli(capsys, root, "check", *flags)
        assert c.code == 1 and "pending: 3 candidates" in c.out, c
    # a build without the key (drafts) never replaces the paid candidates with drafts
    r = cli(capsys, root, "build", "--provider", "placeholder", "--json")
    assert r.code == 0 and lock(root)["pending"]["hero"] == record and emu.billed == 4, r

    requests = len(emu.requests)
    assert cli(capsys, root, "accept", "hero", "--pick", "1").code == 0
    real = lock(root)["outputs"]["hero.png"]
    assert real["provider"] == record["provider"] and real["original"] == record["candidates"][0]["sha256"]
    picked = cached_original(record["candidates"][0]["key"])
    assert without_provenance((root / "out" / "hero.png").read_bytes()) == picked
    assert cli(capsys, root, "check", "--allow-drafts").code == 0  # (an emulator's image is a draft too)
    r = cli(capsys, root, "build", "--provider", "dashscope", "--json")
    assert (r.code, r.json["provider_calls"]) == (0, 0) and len(emu.requests) == requests, r
