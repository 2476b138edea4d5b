"""The template's side of features from PostgreSQL through a shared cache (docs/deploy.md): resources behind
their conditions, TLS, least-privilege access."""

from __future__ import annotations

from tests.deploy.test_template import default

# ------------------------------------------------------------- features from PostgreSQL via a shared cache


FEATURE_RESOURCES = {
    "CreatesFeatureDb": [
        "FeatureDbProxySecurityGroup",
        "FeatureDbSecurityGroup",
        "FeatureDbSecretStore",
        "FeatureDbSubnetGroup",
        "FeatureDbCluster",
        "FeatureDbInstance",
        "FeatureDbProxyRole",
        "FeatureDbProxy",
        "FeatureDbProxyTargetGroup",
    ],
    "CreatesFeatureCache": ["FeatureCacheSecurityGroup", "FeatureCacheCluster"],
    "InVpc": ["FunctionSecurityGroup"],
    "HasRouteTables": ["DynamoDbGatewayEndpoint", "S3GatewayEndpoint"],
    "CreatesInterfaceEndpoints": [
        "EndpointSecurityGroup",
        "SqsInterfaceEndpoint",
        "EventsInterfaceEndpoint",
        "SecretsManagerInterfaceEndpoint",
    ],
}


def test_feature_resources_exist_only_behind_their_condition_and_are_off_by_default(template):
    for condition, names in FEATURE_RESOURCES.items():
        for name in names:
            assert template["Resources"][name]["Condition"] == condition, name
    params = template["Parameters"]
    assert (
        default(template, {"Ref": "FeatureDatabase"}) == "none"
        and params["FeatureCache"]["Default"] == "none"
    )
    assert {"aurora", "existing", "none"} == set(params["FeatureDatabase"]["AllowedValues"])


def test_aurora_is_serverless_v2_postgres_behind_an_rds_proxy_that_requires_tls(template):
    r = template["Resources"]
    cluster, instance = r["FeatureDbCluster"]["Properties"], r["FeatureDbInstance"]["Properties"]
    assert cluster["Engine"] == instance["Engine"] == "aurora-postgresql"
    assert instance["DBInstanceClass"] == "db.serverless" and instance["PubliclyAccessible"] is False
    assert cluster["ServerlessV2ScalingConfiguration"]["MaxCapacity"] == {"Ref": "FeatureDbMaxAcu"}
    assert cluster["StorageEncrypted"] is True
    proxy = r["FeatureDbProxy"]["Properties"]
    assert proxy["EngineFamily"] == "POSTGRESQL" and proxy["RequireTLS"] is True
    assert proxy["Auth"][0]["SecretArn"] == {"Ref": "FeatureDbSecretStore"}
    assert r["FeatureDbProxyTargetGroup"]["Properties"]["DBClusterIdentifiers"] == [
        {"Ref": "FeatureDbCluster"}
    ]
    cache = r["FeatureCacheCluster"]["Properties"]
    assert cache["Engine"] == "valkey"
    # the function reaches the database only through the proxy, the cache only from its own security group
    db_in = r["FeatureDbSecurityGroup"]["Properties"]["SecurityGroupIngress"]
    assert [i["SourceSecurityGroupId"] for i in db_in] == [{"Ref": "FeatureDbProxySecurityGroup"}]
    for sg in ("FeatureDbProxySecurityGroup", "FeatureCacheSecurityGroup", "EndpointSecurityGroup"):
        ingress = r[sg]["Properties"]["SecurityGroupIngress"]
        assert [i["SourceSecurityGroupId"] for i in ingress] == [{"Ref": "FunctionSecurityGroup"}], sg


def test_the_function_joins_the_vpc_and_reads_the_proxy_and_the_cache_over_tls(template, function):
    props = function["Properties"]
    vpc = props["VpcConfig"]["Fn::If"]
    assert vpc[0] == "InVpc" and vpc[2] == {"Ref": "AWS::NoValue"}
    assert vpc[1]["SecurityGroupIds"] == [{"Ref": "FunctionSecurityGroup"}]
    env = props["Environment"]["Variables"]
    host = env["ENRICH_DB_HOST"]["Fn::If"][1]["Fn::If"]
    assert host[1] == {"Fn::GetAtt": ["FeatureDbProxy", "Endpoint"]}  # the proxy, never the cluster
    cache_url = env["ENRICH_CACHE_URL"]["Fn::If"][1]["Fn::If"]
    assert all(branch["Fn::Sub"].startswith("rediss://") for branch in cache_url[1:])
    assert env["ENRICH_SOURCE"] == {"Fn::If": ["UsesFeatureDb", "postgres", "dynamodb"]}


def test_feature_db_access_is_the_secret_or_rds_db_connect_on_the_proxy_user(template):
    statements = {
        st["Fn::If"][1]["Sid"]: (st["Fn::If"][0], st["Fn::If"][1])
        for p in template["Resources"]["ScoringFunctionRole"]["Properties"]["Policies"]
        for st in p["PolicyDocument"]["Statement"]
        if "Fn::If" in st
    }
    cond, secret = statements["ReadFeatureDbSecret"]
    assert cond == "FeatureDbSecret" and secret["Action"] == "secretsmanager:GetSecretValue"
    cond, connect = statements["ConnectToFeatureDb"]
    assert cond == "FeatureDbIam" and connect["Action"] == "rds-db:connect"
    arn, variables = connect["Resource"]["Fn::Sub"]
    assert arn.endswith(":dbuser:${ProxyId}/${FeatureDbUser}")  # one database user of one proxy
    assert statements["VpcNetworkInterfaces"][0] == "InVpc"


def test_feature_db_proxy_role_reads_only_its_secret(template):
    role = template["Resources"]["FeatureDbProxyRole"]["Properties"]
    assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {"Service": "rds.amazonaws.com"}
    (policy,) = role["Policies"]
    (statement,) = policy["PolicyDocument"]["Statement"]
    assert statement["Action"] == "secretsmanager:GetSecretValue"
    assert statement["Resource"] == {"Ref": "FeatureDbSecretStore"}
