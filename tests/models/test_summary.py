"""summary(model, input_shape): one row a leaf layer, shapes from a real forward pass, windows, counts and FLOPs."""

import importlib
import re

import numpy as np
import pytest

import minialex as ma
from minialex import models, nn
from minialex.models import summary


@pytest.fixture(scope="module")
def paper():
    ma.manual_seed(0)
    return models.alexnet()


@pytest.fixture(scope="module")
def paper_summary(paper):
    return summary(paper, (3, 227, 227))


def leaf_modules(model):
    return [(name, m) for name, m in model.named_modules() if next(m.children(), None) is None]


def test_one_row_per_leaf_layer_in_forward_order(paper, paper_summary):
    leaves = leaf_modules(paper)
    assert len(paper_summary.rows) == len(leaves) == 15 + 7
    assert [row["name"] for row in paper_summary.rows] == [name for name, _ in leaves]
    assert [row["type"] for row in paper_summary.rows] == [type(m).__name__ for _, m in leaves]


def test_output_shapes_are_the_paper_maps(paper_summary):
    shapes = {row["name"]: row["output_shape"] for row in paper_summary.rows}
    expected = {
        "features.0": (1, 96, 55, 55),  # conv1
        "features.3": (1, 96, 27, 27),  # pool1
        "features.4": (1, 256, 27, 27),  # conv2
        "features.7": (1, 256, 13, 13),  # pool2
        "features.8": (1, 384, 13, 13),  # conv3
        "features.10": (1, 384, 13, 13),  # conv4
        "features.12": (1, 256, 13, 13),  # conv5
        "features.14": (1, 256, 6, 6),  # pool5
        "classifier.1": (1, 4096),
        "classifier.4": (1, 4096),
        "classifier.6": (1, 1000),
    }
    for name, shape in expected.items():
        assert tuple(shapes[name]) == shape, name
    conv_pool = [row["output_shape"][2] for row in paper_summary.rows if row["type"] in ("Conv2d", "MaxPool2d")]
    assert conv_pool == [55, 27, 27, 13, 13, 13, 13, 6]


def test_torchvision_variant_rows_map_224_to_the_same_sizes():
    s = summary(models.alexnet_torchvision(), (3, 224, 224))
    conv_pool = [row["output_shape"][2] for row in s.rows if row["type"] in ("Conv2d", "MaxPool2d")]
    assert conv_pool == [55, 27, 27, 13, 13, 13, 13, 6]
    assert s.total_params == 61_100_840


def test_total_params_is_60965224_and_equals_the_sum_of_the_rows(paper, paper_summary):
    assert paper_summary.total_params == 60_965_224
    assert sum(row["params"] for row in paper_summary.rows) == paper_summary.total_params
    assert paper_summary.trainable_params == 60_965_224
    by_name = {row["name"]: row["params"] for row in paper_summary.rows}
    assert by_name["features.0"] == 96 * 3 * 11 * 11 + 96
    assert by_name["classifier.1"] == 9216 * 4096 + 4096
    assert by_name["features.1"] == by_name["features.2"] == by_name["features.3"] == 0


def test_conv1_flops_count_a_multiply_add_as_two_plus_one_add_per_output_for_the_bias(paper_summary):
    conv1 = paper_summary.rows[0]
    outputs = 55 * 55 * 96
    assert conv1["flops"] == 2 * outputs * 3 * 11 * 11 + outputs


def test_grouped_conv_and_linear_flops(paper_summary):
    rows = {row["name"]: row for row in paper_summary.rows}
    conv2_outputs = 27 * 27 * 256
    assert rows["features.4"]["flops"] == 2 * conv2_outputs * 48 * 5 * 5 + conv2_outputs  # 96/2 channels a group
    assert rows["classifier.6"]["flops"] == 2 * 4096 * 1000 + 1000
    assert rows["classifier.0"]["flops"] == 0  # dropout in evaluation
    assert paper_summary.total_flops == sum(row["flops"] for row in paper_summary.rows)
    # the well-known ~0.7 G multiply-adds of AlexNet's forward pass
    assert 1.3e9 < paper_summary.total_flops < 1.6e9


def test_str_is_a_table_with_a_row_per_layer_and_totals_with_thousands_separators(paper_summary):
    text = str(paper_summary)
    lines = text.splitlines()
    for row in paper_summary.rows:
        matching = [line for line in lines if re.search(rf"(^|\s){re.escape(row['name'])}(\s|$)", line)]
        assert len(matching) == 1, row["name"]
        line = matching[0]
        assert f"{row['params']:,}" in line and f"{row['flops']:,}" in line
        assert str(tuple(row["output_shape"])) in line or " ".join(map(str, row["output_shape"])) in line
    assert "60,965,224" in text
    assert "37,752,832" in text  # fc6's row
    # the totals are at the foot, after every layer row
    last_row = max(i for i, line in enumerate(lines) for row in paper_summary.rows if row["name"] in line.split())
    total_line = next(i for i, line in enumerate(lines) if "60,965,224" in line)
    assert total_line > last_row
    assert f"{paper_summary.total_flops:,}" in "\n".join(lines[last_row + 1:])
    assert repr(paper_summary) == text or "60,965,224" in repr(paper_summary)


def test_58299082_appears_in_the_table_of_the_keras_tutorial_model():
    model = models.alexnet(num_classes=10, in_channels=1, groups=1, lrn=False)
    s = summary(model, (1, 1, 227, 227))
    assert s.total_params == 58_299_082
    assert "58,299,082" in str(s)


def test_batched_and_unbatched_input_shapes_are_both_accepted():
    model = models.alexnet_mnist()
    unbatched = summary(model, (1, 28, 28))
    batched = summary(model, (4, 1, 28, 28))
    assert unbatched.rows[0]["output_shape"][0] == 1
    assert batched.rows[0]["output_shape"][0] == 4
    assert [r["output_shape"][1:] for r in unbatched.rows] == [r["output_shape"][1:] for r in batched.rows]
    assert unbatched.total_params == batched.total_params
    # FLOPs scale with the batch
    assert batched.total_flops == 4 * unbatched.total_flops


@pytest.mark.parametrize("mode", [True, False])
def test_the_model_training_mode_is_restored(mode):
    model = models.alexnet_mnist()
    model.train(mode)
    summary(model, (1, 28, 28))
    assert all(m.training is mode for m in model.modules())


def test_summary_leaves_no_hooks_and_no_gradients_behind():
    model = models.alexnet_mnist()
    s = summary(model, (1, 28, 28))
    n_rows = len(s.rows)
    model.eval()
    with ma.no_grad():
        model(ma.tensor(np.zeros((2, 1, 28, 28), dtype=np.float32)))
    model(ma.tensor(np.zeros((1, 1, 28, 28), dtype=np.float32)))
    assert len(s.rows) == n_rows
    assert all(p.grad is None for p in model.parameters())


def test_summary_follows_the_model_not_a_table():
    model = nn.Sequential(nn.Conv2d(2, 6, 3, padding=1, groups=2), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(6 * 4 * 4, 5))
    s = summary(model, (2, 8, 8))
    assert [row["name"] for row in s.rows] == ["0", "1", "2", "3", "4"]
    assert [tuple(row["output_shape"]) for row in s.rows] == [(1, 6, 8, 8), (1, 6, 8, 8), (1, 6, 4, 4), (1, 96),
                                                              (1, 5)]
    assert s.total_params == 6 * 1 * 9 + 6 + 96 * 5 + 5
    assert s.rows[0]["flops"] == 2 * 6 * 8 * 8 * 1 * 9 + 6 * 8 * 8
    assert s.rows[1]["flops"] == 6 * 8 * 8  # one comparison an element
    assert s.rows[2]["flops"] == 6 * 4 * 4 * 3  # 2x2 windows: 3 comparisons an output


@pytest.mark.parametrize("shape", [(3, 227), (227,), (), (1, 1, 3, 227, 227), (0, 3, 227, 227), (3, -1, 227),
                                   (3, 227.0, 227)])
def test_a_bad_input_shape_raises_value_error(shape):
    with pytest.raises(ValueError):
        summary(models.alexnet_mnist(), shape)


def test_an_input_of_the_wrong_size_raises_the_models_value_error_and_restores_the_mode():
    model = models.alexnet_mnist().train()
    with pytest.raises(ValueError, match="28"):
        summary(model, (1, 32, 32))
    assert model.training


def test_a_non_module_raises_type_error():
    with pytest.raises(TypeError):
        summary(lambda x: x, (1, 28, 28))


# --------------------------------------------------------------------------- each layer's window


def test_conv_pool_and_lrn_rows_give_kernel_stride_padding_groups_and_size(paper_summary):
    rows = {row["name"]: row for row in paper_summary.rows}
    window = ("kernel_size", "stride", "padding", "groups")
    assert tuple(rows["features.0"][k] for k in window) == ((11, 11), (4, 4), (0, 0), 1)  # conv1
    assert tuple(rows["features.4"][k] for k in window) == ((5, 5), (1, 1), (2, 2), 2)  # conv2, two towers
    assert tuple(rows["features.8"][k] for k in window) == ((3, 3), (1, 1), (1, 1), 1)  # conv3 sees both towers
    for pool in ("features.3", "features.7", "features.14"):
        assert tuple(rows[pool][k] for k in window) == ((3, 3), (2, 2), (0, 0), None)  # overlapping pools
    assert rows["features.2"]["size"] == rows["features.6"]["size"] == 5  # LRN across 5 channels
    for name in ("features.1", "classifier.0", "classifier.1"):  # ReLU, Dropout, Linear: no window
        assert all(rows[name][k] is None for k in window + ("size",)), name


def test_the_table_shows_each_window_in_its_own_column(paper_summary):
    lines = str(paper_summary).splitlines()
    header = next(line for line in lines if line.startswith("Layer"))
    assert "Kernel / stride / pad / groups" in header
    column = header.index("Kernel / stride / pad / groups")

    def cell(name):
        line = next(line for line in lines if line.split()[:1] == [name])
        return line[column:].split("  ")[0]

    assert cell("features.0") == "11x11 / 4 / 0 / 1"
    assert cell("features.4") == "5x5 / 1 / 2 / 2"
    assert cell("features.3") == cell("features.7") == cell("features.14") == "3x3 / 2 / 0 / -"
    assert cell("features.2") == "size 5"
    assert cell("features.1") == "" and cell("classifier.1") == ""


def test_a_window_that_differs_between_height_and_width_is_written_h_x_w():
    model = nn.Sequential(nn.Conv2d(2, 6, (3, 5), stride=(1, 2), padding=(0, 1), groups=2), nn.MaxPool2d((2, 1)))
    text = str(summary(model, (2, 8, 8)))
    assert "3x5 / 1x2 / 0x1 / 2" in text
    assert "2x1 / 2x1 / 0 / -" in text


def test_the_last_line_states_the_flops_convention_of_the_module_docstring(paper_summary):
    summary_module = importlib.import_module("minialex.models.summary")  # the name alone is the function
    last = str(paper_summary).splitlines()[-1]
    assert last == summary_module.FLOPS_CONVENTION
    assert last.startswith("FLOPs: a multiply-add counts 2")
    docstring = " ".join(summary_module.__doc__.split())
    for phrase in ("a multiply-add as 2", "every other arithmetic operation", "forward pass only",
                   "evaluation mode"):
        assert phrase in docstring, phrase
    for phrase in ("multiply-add counts 2", "every other arithmetic operation 1", "forward pass only",
                   "evaluation mode"):
        assert phrase in last, phrase
