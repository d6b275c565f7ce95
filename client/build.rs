//! Generates the gRPC client (and message types) from the server's proto files, with
//! `serde::Serialize` on every message so `--json` output and library users serialize the
//! messages instead of building JSON by hand.
//!
//! The proto is compiled to a descriptor set first; its field types decide the serde attribute
//! of each field (timestamps as RFC 3339 strings, durations as seconds, enums as short names,
//! optional strings as `null` when empty), so a field added to the proto gets the right JSON with no edit here.
use std::path::PathBuf;
use std::process::Command;

use prost::Message as _;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::FileDescriptorSet;

const PROTO: &str = "../proto/capydb/auth_sync/v1/auth_sync.proto";
const PACKAGE: &str = "capydb.auth_sync.v1";
/// String fields that are always set, so they stay strings even when empty.
const REQUIRED_STRINGS: &[&str] = &["id", "project_id", "verdict"];
/// Fields holding secrets: serialized as `"<redacted>"` and left out of `Debug` (see lib.rs).
const SECRET_FIELDS: &[&str] =
    &["Credentials.secret_key", "Credentials.webhook_signing_secret", "ConfigureIntegrationRequest.database_url"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let fds_path = out_dir.join("auth_sync_descriptor.bin");
    let status = Command::new(&protoc)
        .arg("--include_imports")
        .arg("--include_source_info")
        .arg(format!("--descriptor_set_out={}", fds_path.display()))
        .arg("-I../proto")
        .arg(format!("-I{}", protoc_bin_vendored::include_path()?.display()))
        .arg(PROTO)
        .status()?;
    if !status.success() {
        return Err(format!("protoc failed on {PROTO}: {status}").into());
    }
    let fds = FileDescriptorSet::decode(std::fs::read(&fds_path)?.as_slice())?;

    let mut builder = tonic_prost_build::configure()
        .build_server(false)
        .message_attribute(format!(".{PACKAGE}"), "#[derive(serde::Serialize)]")
        .skip_debug([format!(".{PACKAGE}.Credentials"), format!(".{PACKAGE}.ConfigureIntegrationRequest")]);
    for file in fds.file.iter().filter(|f| f.package() == PACKAGE) {
        for message in &file.message_type {
            for field in &message.field {
                let name = format!("{}.{}", message.name(), field.name());
                let path = format!(".{PACKAGE}.{name}");
                if SECRET_FIELDS.contains(&name.as_str()) {
                    builder = builder.field_attribute(path, "#[serde(serialize_with = \"crate::json::redacted\")]");
                } else if let Some(attr) = serde_attribute(field) {
                    builder = builder.field_attribute(path, attr);
                }
            }
        }
    }
    builder.compile_fds(fds)?;
    println!("cargo:rerun-if-changed=../proto");
    println!("cargo:rerun-if-changed=build.rs");
    Ok(())
}

/// The serde attribute of one field, when the derived default is not what a person wants.
fn serde_attribute(field: &prost_types::FieldDescriptorProto) -> Option<String> {
    let repeated = field.label() == Label::Repeated;
    let with = match field.r#type() {
        Type::Message if field.type_name() == ".google.protobuf.Timestamp" => {
            if repeated {
                "crate::json::timestamps".to_string()
            } else {
                "crate::json::timestamp".to_string()
            }
        }
        Type::Message if field.type_name() == ".google.protobuf.Duration" && !repeated => {
            "crate::json::duration".to_string()
        }
        Type::Enum => {
            let name = field.type_name().rsplit('.').next().unwrap_or_default();
            let f = if repeated { "serialize_seq" } else { "serialize" };
            format!("crate::json::EnumName::<crate::pb::{name}>::{f}")
        }
        Type::String if !repeated && !REQUIRED_STRINGS.contains(&field.name()) => {
            "crate::json::empty_as_null".to_string()
        }
        _ => return None,
    };
    Some(format!("#[serde(serialize_with = \"{with}\")]"))
}
