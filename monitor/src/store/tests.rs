use super::*;

#[test]
fn refusals_name_a_missing_formation_briefly() {
    let err = no_formation("nosuch");
    assert!(matches!(err, Error::NotFound(_)), "{err}");
    assert_eq!(
        err.to_string(),
        "formation \"nosuch\" does not exist: use the formation \"default\" or create it with create-formation"
    );
    assert!(no_formation(&"f".repeat(10_000)).to_string().len() < 200);
}

#[test]
fn a_corrupt_row_is_an_internal_error_not_a_refusal() {
    let err = Error::Corrupt("node.goal_state of node 1: unknown state \"x\"".into());
    let status = tonic::Status::from(err);
    assert_eq!(status.code(), tonic::Code::Internal, "{status:?}");
    let refused = Error::Refused(Refusal::NoPrimary);
    assert_eq!(
        tonic::Status::from(refused).code(),
        tonic::Code::FailedPrecondition
    );
    let unknown = Error::Refused(Refusal::UnknownNode {
        formation: "default".into(),
        name: "x".into(),
        known: vec!["node1".into()],
    });
    assert_eq!(tonic::Status::from(unknown).code(), tonic::Code::NotFound);
}
