"""The deploy step as a KFP component: a thin wrapper over ``deploy.deploy_export``."""

from typing import NamedTuple

from google_cloud_pipeline_components.types.artifact_types import VertexEndpoint, VertexModel
from kfp.dsl import Output

from tune2serve.components.step_component import step_component


@step_component
def deploy(
    export_uri: str, project: str, region: str, machine_type: str, accelerator_type: str, accelerator_count: int,
    min_replica_count: int, max_replica_count: int, endpoint_display_name: str, model_display_name: str,
    enable_private_service_connect: bool, psc_project_allowlist: list, deploy_timeout_s: int, run_id: str,
    vertex_model: Output[VertexModel], vertex_endpoint: Output[VertexEndpoint], validated: str = "",
) -> NamedTuple("DeployOutputs", endpoint=str, model=str, deployed_model_id=str, dedicated_endpoint_dns=str):
    """Deploys a validated export to a Vertex AI endpoint (custom weights), reusing what an
    earlier run made for the same export. Empty strings / 0 mean "not given".

    ``validated``: validate's summary (JSON) of this export, which passed; its validation is
    reused when it covers exactly the files deployed, else the export is validated again."""
    from collections import namedtuple

    from tune2serve.components.deploy.deploy import deploy_export
    from tune2serve.components.deploy.request import DeploySpec, Validated, check_replicas, vertex_resource_uri
    from tune2serve.components.vertex.machine_spec import parse_machine_spec
    from tune2serve.components.ranges import check_parameters

    check_parameters(accelerator_count=accelerator_count, min_replica_count=min_replica_count,
                     max_replica_count=max_replica_count, deploy_timeout_s=deploy_timeout_s)
    check_replicas(min_replica_count, max_replica_count)  # the CLI's rule: max below min is refused
    result = deploy_export(DeploySpec(
        export_uri=export_uri, project=project, region=region,
        machine=parse_machine_spec(machine_type, accelerator_type, accelerator_count),
        min_replica_count=min_replica_count, max_replica_count=max_replica_count,
        endpoint_display_name=endpoint_display_name or None, model_display_name=model_display_name or None,
        enable_private_service_connect=enable_private_service_connect,
        psc_project_allowlist=tuple(psc_project_allowlist or ()), deploy_timeout_s=deploy_timeout_s,
        run_id=run_id or None, validated=Validated.from_summary(validated)))
    for artifact, name in ((vertex_model, result.model), (vertex_endpoint, result.endpoint)):
        artifact.uri = vertex_resource_uri(region, name)
        artifact.metadata["resourceName"] = name
    outputs = namedtuple("DeployOutputs", ["endpoint", "model", "deployed_model_id", "dedicated_endpoint_dns"])
    return outputs(result.endpoint, result.model, result.deployed_model_id, result.dedicated_endpoint_dns)
