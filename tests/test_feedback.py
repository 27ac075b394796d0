"""The demo's feedback folder: `feedback/<class>/` images and `feedback.csv` rows."""

from __future__ import annotations

import datetime

import pandas as pd

from transferkit.demo.feedback import COLUMNS, Feedback


def test_saves_the_bytes_under_the_class_given_with_a_row_each(tmp_path):
    feedback = Feedback(tmp_path / "feedback")
    jpeg, png = b"\xff\xd8\xff fake jpeg bytes", b"\x89PNG fake png bytes"
    first = feedback.save(jpeg, ".JPG", "rose", "tulip", 0.8125)
    second = feedback.save(png, "", "rose", "daisy", 0.5)  # no extension: .png
    third = feedback.save(png, ".png", "tulip", "rose", 0.25)
    assert first.parent == tmp_path / "feedback" / "rose" and first.suffix == ".jpg"
    assert second.suffix == ".png" and third.parent.name == "tulip"
    assert [p.read_bytes() for p in (first, second, third)] == [jpeg, png, png]
    rows = pd.read_csv(tmp_path / "feedback" / "feedback.csv")
    assert list(rows.columns) == COLUMNS
    assert rows["file"].tolist() == [f"rose/{first.name}", f"rose/{second.name}",
                                     f"tulip/{third.name}"]
    assert rows["class"].tolist() == ["rose", "rose", "tulip"]
    assert rows["predicted"].tolist() == ["tulip", "daisy", "rose"]
    assert rows["probability"].tolist() == [0.8125, 0.5, 0.25]
    when = datetime.datetime.fromisoformat(rows["time"][0])
    assert abs(datetime.datetime.now(datetime.timezone.utc) - when).total_seconds() < 600
    counts = feedback.counts(["daisy", "rose", "tulip"])
    assert counts.to_dict("list") == {"class": ["daisy", "rose", "tulip"],
                                      "images": [0, 2, 1]}


def test_no_feedback_yet_counts_zero_and_writes_nothing(tmp_path):
    feedback = Feedback(tmp_path / "feedback")
    assert feedback.counts(["a", "b"])["images"].tolist() == [0, 0]
    assert not (tmp_path / "feedback").exists()
