"""Typed views of stage outputs: the fields readers use, extra fields kept."""

from aimmat.stages.results import ElasticResult, EngineStageResult, ScreenResult


def test_screen_result_reads_pass_by_its_json_name():
    r = ScreenResult.model_validate({"criteria": {"min_distance": {"pass": False, "value": 0.3}, "density": {"pass": True}},
                                     "strict_pass": False, "formula": "Cu"})
    assert r.failed() == ["min_distance"] and r.criteria["density"].passed and not r.strict_pass


def test_engine_result_defaults_and_extras():
    r = EngineStageResult.model_validate({"structure_sha256": "a" * 64, "engine": {"metallic": True, "memory_mb": 5},
                                          "volume_a3": 11.0})
    assert r.engine.metallic is True and r.energy_ev is None and r.model_extra["volume_a3"] == 11.0
    assert EngineStageResult.model_validate({}).engine.metallic is None


def test_elastic_pass_both_needs_both_gates():
    assert ElasticResult.model_validate({"pass_fit_rms": True, "pass_pd": True}).pass_both
    assert not ElasticResult.model_validate({"pass_fit_rms": True, "pass_pd": False}).pass_both
    assert not ElasticResult.model_validate({}).pass_both  # a record without gates never passes
    assert ElasticResult.model_validate({}).complete  # older records: no lost cells recorded
