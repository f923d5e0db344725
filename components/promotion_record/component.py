"""The record-promotion step as a KFP component: remember that this run promoted its
export. A thin wrapper over ``promotion_record.record_after_verify``."""

from tune2serve.components.step_component import step_component


@step_component
def record_promotion(export_uri: str, endpoint: str, model: str, run_id: str, outcome: str,
                     production_endpoint: str = "", override: str = "", quality_verdict: str = "",
                     eval_set_sha256: str = "", judge: str = "") -> str:
    """Writes ``<export>.promotion.json`` beside the export when outcome is promoted or
    verified, so a scheduled run does not promote the same tuning output twice. Never
    fails the run over a storage error (the promotion already happened): it warns and
    says so in its output.

    Args:
        export_uri: the export that was promoted.
        endpoint: the endpoint deploy made.
        model: the Model resource name deploy registered.
        run_id: the pipeline job name, kept in the record.
        outcome: verify-traffic's outcome.
        production_endpoint: the endpoint promoted onto ("" when the new endpoint serves alone).
        quality_verdict: the quality gate's verdict ("" when no eval set was compared).
        eval_set_sha256: the sha256 of the eval set the gate read ("" for none).
        judge: the judge the gate asked ("" for none).
        override: verify-traffic's override output (JSON: reason, overridden verdict, identity) when
            force_promote overrode the quality gate; "" otherwise.
    """
    from tune2serve.components.promotion_record.promotion_record import record_after_verify

    return record_after_verify(export_uri, endpoint=endpoint, model=model, outcome=outcome, run_id=run_id,
                               production_endpoint=production_endpoint, override=override,
                               quality_verdict=quality_verdict, eval_set_sha256=eval_set_sha256, judge=judge)
