import pytest

from edgesdk.api import ExportOptions
from edgesdk.errors import InputError, QuantizationError
from edgesdk.families import InputData
from edgesdk.profiles import load_profile
from edgesdk.quant import CalibrationSet, QuantOverrides, QuantSpec, load_texts, packaged_texts


def test_packaged_sets_are_large_and_disjoint():
    calib, held = packaged_texts("calibration").texts, packaged_texts("heldout").texts
    assert len(calib) >= 300 and len(held) >= 200
    assert not set(calib) & set(held)


def test_packaged_heldout_is_used_whole():
    # the default fidelity cap must take every packaged held-out text: lines past it would never be measured
    held = packaged_texts("heldout").texts
    assert len(held) <= ExportOptions().fidelity_samples == InputData().fidelity_samples
    assert len(set(held)) == len(held) and not any("\t" in t for t in held)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("\n\n  \n")
    with pytest.raises(InputError, match="holds no text"):
        load_texts(path)


def test_non_utf8_file(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    with pytest.raises(InputError, match="not UTF-8.*iconv"):
        load_texts(path)


def test_tsv_with_header_uses_text_columns(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text("index\tsentence1\tsentence2\tscore\n0\ta cat\ta dog\t1.0\n1\tsun\tmoon\t2.0\n")
    assert load_texts(path).texts == ("a cat", "a dog", "sun", "moon")


def test_fewer_texts_than_samples(tmp_path):
    path = tmp_path / "few.txt"
    path.write_text("one\ntwo\n")
    with pytest.raises(InputError, match="has only 2 items"):
        CalibrationSet.build(load_texts(path), lambda t: {}, samples=10)


def test_too_few_samples_for_the_method():
    with pytest.raises(QuantizationError, match="too few.*percentile"):
        QuantSpec.from_profile(load_profile("intel"), QuantOverrides(calibration_method="percentile", samples=4))


def test_unknown_calibration_method():
    with pytest.raises(QuantizationError, match="unknown.*minmax"):
        QuantSpec.from_profile(load_profile("intel"), QuantOverrides(calibration_method="kl-magic"))


def test_asymmetric_activations_for_tensorrt_are_refused():
    with pytest.raises(QuantizationError, match="symmetric activations"):
        QuantSpec.from_profile(load_profile("jetson"), QuantOverrides(activation_symmetric=False))


def test_spec_follows_the_profile():
    assert QuantSpec.from_profile(load_profile("jetson")).activation_symmetric is True
    android = QuantSpec.from_profile(load_profile("android"))
    assert android.full_integer and not android.activation_symmetric


def test_spec_outlier_options_reach_nncf():
    import nncf

    from edgesdk.quant.nncf_options import nncf_quantize_kwargs

    spec = QuantSpec.from_profile(load_profile("intel"), QuantOverrides(float_ops=("Softmax", r".*layer\.5/.*"),
                                                                         smooth_quant=False))
    kwargs = nncf_quantize_kwargs(nncf, spec, ("/keep/MatMul",), 16)
    scope = kwargs["ignored_scope"]
    assert scope.types == ["Softmax"] and scope.patterns == [r".*layer\.5/.*"] and scope.names == ["/keep/MatMul"]
    assert kwargs["advanced_parameters"].smooth_quant_alphas.matmul == -1
    assert kwargs["preset"] == nncf.QuantizationPreset.MIXED
    default = nncf_quantize_kwargs(nncf, QuantSpec.from_profile(load_profile("jetson")), (), 16)
    assert default["ignored_scope"] is None and default["preset"] == nncf.QuantizationPreset.PERFORMANCE
