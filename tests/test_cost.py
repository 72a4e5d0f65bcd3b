"""Cost is known before anything is spent: the plan prices it, --budget/--max-images refuse."""
from __future__ import annotations

from pathlib import Path

import pytest

from helpers import run


def test_plan_prices_images_per_model(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = run(capsys, "plan", "-C", str(site), "--json")
    cost = r.json["cost"]
    assert cost["currency"] == "CNY" and cost["region"] == "beijing" and cost["paid"] is False
    # the hero, six product shots and the logo; each edit of the logo chain is one image more
    assert cost["by_model"]["qwen-image-plus"] == {"images": 8, "unit_price": 0.2, "cost": 1.6}
    assert cost["by_model"]["wan2.6-t2i"]["images"] == 1
    assert cost["by_model"]["qwen-image-edit-plus"]["images"] == 1
    assert cost["by_model"]["wan2.6-image"]["images"] == 1
    assert cost["total"] == pytest.approx(2.2)
    # the edit models' prices are from no official price page: the plan says so beside them
    assert cost["by_model"]["qwen-image-edit-plus"]["price_unverified"] is True
    assert cost["by_model"]["wan2.6-image"]["price_unverified"] is True
    text = run(capsys, "plan", "-C", str(site))
    assert "total: 11 image(s), 2.20 CNY (beijing prices)" in text.out
    assert "  wan2.6-image: 1 × 0.2 = 0.20 CNY (price unverified)\n" in text.out
    assert "  qwen-image-plus: 8 × 0.2 = 1.60 CNY\n" in text.out


def test_region_changes_prices(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = site / "imgbuild.yaml"
    spec.write_text(spec.read_text().replace("version: 1", "version: 1\nregion: singapore"))
    r = run(capsys, "plan", "-C", str(site), "--json")
    assert r.json["cost"]["by_model"]["qwen-image-plus"]["unit_price"] == pytest.approx(0.220177)


def test_max_images_refuses_before_any_work(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = run(capsys, "build", "-C", str(site), "--max-images", "10")
    assert r.code == 1 and "would generate 11 image(s), more than --max-images 10" in r.err
    assert not (site / "assets").exists() and not (site / "imgbuild.lock").exists()
    assert run(capsys, "build", "-C", str(site), "--max-images", "11").code == 0


def test_budget_refuses_a_paid_build_before_any_request(site: Path, capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DASHSCOPE_API_KEY", "sk-test")
    monkeypatch.setenv("DASHSCOPE_HTTP_BASE_URL", "http://127.0.0.1:9/api/v1")  # nothing listens
    r = run(capsys, "build", "-C", str(site), "--budget", "1.5")
    assert r.code == 1 and "would cost 2.20 CNY, more than --budget 1.5" in r.err
    assert not (site / "assets").exists()


def test_drafts_are_never_counted_as_bought_or_saved(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = run(capsys, "build", "-C", str(site), "--json")
    assert r.json["images_bought"] == 0 and r.json["spent"] == 0 and r.json["saved_by_cache"] == 0
    (site / "assets/generated/hero.png").unlink()
    r = run(capsys, "build", "-C", str(site), "--json")
    assert r.json["restored"] == 1
    assert r.json["saved_by_cache"] == 0 and r.json["spent"] == 0 and r.json["images_bought"] == 0


def test_every_model_is_priced_in_each_region_that_offers_it() -> None:
    from imgbuild.spec import catalogue

    for model in catalogue.MODELS.values():
        assert set(model.price) == set(model.regions), model.name  # validated plans know the price


def test_a_price_is_never_borrowed_from_another_region() -> None:
    from types import SimpleNamespace

    from imgbuild.plan import cost
    from imgbuild.plan.states import GENERATE
    from imgbuild.spec import catalogue

    assert cost.unit_price("wanx2.1-t2i-plus", "singapore") is None  # Beijing-only
    assert cost.unit_price("wan2.6-t2i", "virginia") == pytest.approx(0.20)

    def step(model: str, n: int) -> SimpleNamespace:
        return SimpleNamespace(action=GENERATE, target=SimpleNamespace(
            request=SimpleNamespace(model=model, n=n)))

    est = cost.estimate([step("wanx2.1-t2i-plus", 2), step("qwen-image-plus", 1)], "singapore")
    assert est["by_model"]["wanx2.1-t2i-plus"] == {"images": 2, "unit_price": None, "cost": None}
    assert est["total"] == pytest.approx(catalogue.MODELS["qwen-image-plus"].price["singapore"])
    assert est["price_unknown"] == ["wanx2.1-t2i-plus"]
    from imgbuild.report import describe_cost

    text = "\n".join(describe_cost(est))
    assert "wanx2.1-t2i-plus: 2 × price unknown in singapore" in text
    assert "plus wanx2.1-t2i-plus at a price unknown here" in text
