"""tools/plot_metrics.py: losses, learning rate and evaluation metrics of metrics.json in a PNG."""
import json

import pytest
from PIL import Image

from mask_former.engine.metrics_plot import read_metrics, select_panels
from test_tools import load_tool


def write_metrics(folder):
    """A run of 40 iterations evaluated at 19 and 39, killed after 29 and resumed from 19 (iterations
    20 to 29 are written twice, the later value counts)."""
    records = []
    for iteration in list(range(0, 30)) + list(range(20, 40)):
        resumed = len(records) >= 30
        loss = 10.0 / (iteration + 1) + (0.5 if resumed else 0.0)
        record = {"iteration": iteration, "total_loss": loss, "loss_ce": loss / 2, "loss_ce_0": loss / 3,
                  "loss_mask": loss / 4, "lr": 1e-4 * (1 - iteration / 40), "time": 0.1, "data_time": 0.01}
        if iteration in (19, 39):
            record.update({"panoptic_seg/PQ": iteration, "panoptic_seg/SQ": 70.0, "sem_seg/mIoU": 2 * iteration,
                           "sem_seg/IoU-sky": 90.0, "segm/AP": iteration / 2})
        records.append(record)
    (folder / "metrics.json").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_series_keep_the_last_value_of_each_iteration(tmp_path):
    write_metrics(tmp_path)
    series = read_metrics(str(tmp_path / "metrics.json"))
    assert [i for i, _ in series["total_loss"]] == list(range(40))
    assert dict(series["total_loss"])[25] == pytest.approx(10.0 / 26 + 0.5)  # the resumed run's value
    assert series["panoptic_seg/PQ"] == [(19, 19.0), (39, 39.0)]
    assert select_panels(series) == {
        "losses": ["loss_ce", "loss_mask", "total_loss"],  # not the intermediate layers' loss_ce_0
        "learning rate": ["lr"],
        "evaluation": ["panoptic_seg/PQ", "segm/AP", "sem_seg/mIoU"],
    }
    assert select_panels(series, ["sem_seg/IoU-sky"])["evaluation"] == ["sem_seg/IoU-sky"]


def test_plot_metrics_writes_a_png(tmp_path, capsys):
    write_metrics(tmp_path)
    tool = load_tool("plot_metrics.py")
    assert tool.main([str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "metrics.png")
    with Image.open(tmp_path / "metrics.png") as image:
        assert image.format == "PNG" and image.size == (800, 900)  # three panels
    assert tool.main([str(tmp_path), "--output", str(tmp_path / "sub" / "curves.png")]) == 0
    assert (tmp_path / "sub" / "curves.png").is_file()


def test_plot_metrics_errors_name_the_file(tmp_path, capsys):
    tool = load_tool("plot_metrics.py")
    assert tool.main([str(tmp_path)]) == 2
    assert f"{tmp_path / 'metrics.json'} does not exist" in capsys.readouterr().err
    (tmp_path / "metrics.json").write_text('{"iteration": 0, "lr": 0.1}\nnot json\n')
    assert tool.main([str(tmp_path)]) == 2
    assert "metrics.json, line 2" in capsys.readouterr().err
