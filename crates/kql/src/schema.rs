//! Column schemas of the Advanced Hunting Device* tables, after Microsoft's schema reference
//! (https://learn.microsoft.com/en-us/defender-xdr/advanced-hunting-schema-tables) and the
//! column order of real exports (/work/shared/scenarios/*/mde/*.jsonl).

use culprit_model::{Column, KustoType};

/// The Device* tables the engine knows; one missing from the data evaluates as empty.
pub const DEVICE_TABLES: &[&str] = &[
    "DeviceNetworkEvents",
    "DeviceProcessEvents",
    "DeviceEvents",
    "DeviceFileEvents",
    "DeviceRegistryEvents",
    "DeviceLogonEvents",
    "DeviceImageLoadEvents",
    "DeviceInfo",
    "DeviceNetworkInfo",
];

/// Compact `Name:type` lists, one per table, so a reader can compare them with the docs.
const SCHEMAS: &[(&str, &str)] = &[
    (
        "DeviceEvents",
        "Timestamp:datetime DeviceId:string DeviceName:string ActionType:string FileName:string FolderPath:string SHA1:string SHA256:string MD5:string FileSize:long AccountDomain:string AccountName:string AccountSid:string RemoteUrl:string RemoteDeviceName:string ProcessId:long ProcessCommandLine:string ProcessCreationTime:datetime ProcessTokenElevation:string LogonId:long RegistryKey:string RegistryValueName:string RegistryValueData:string RemoteIP:string RemotePort:int LocalIP:string LocalPort:int FileOriginUrl:string FileOriginIP:string InitiatingProcessSHA1:string InitiatingProcessSHA256:string InitiatingProcessMD5:string InitiatingProcessFileName:string InitiatingProcessFileSize:long InitiatingProcessFolderPath:string InitiatingProcessId:long InitiatingProcessCommandLine:string InitiatingProcessCreationTime:datetime InitiatingProcessAccountDomain:string InitiatingProcessAccountName:string InitiatingProcessAccountSid:string InitiatingProcessAccountUpn:string InitiatingProcessAccountObjectId:string InitiatingProcessVersionInfoCompanyName:string InitiatingProcessVersionInfoProductName:string InitiatingProcessVersionInfoProductVersion:string InitiatingProcessVersionInfoInternalFileName:string InitiatingProcessVersionInfoOriginalFileName:string InitiatingProcessVersionInfoFileDescription:string InitiatingProcessParentId:long InitiatingProcessParentFileName:string InitiatingProcessParentCreationTime:datetime InitiatingProcessLogonId:long InitiatingProcessIntegrityLevel:string InitiatingProcessTokenElevation:string ReportId:long AppGuardContainerId:string AdditionalFields:dynamic InitiatingProcessSessionId:long IsInitiatingProcessRemoteSession:bool InitiatingProcessRemoteSessionDeviceName:string InitiatingProcessRemoteSessionIP:string CreatedProcessSessionId:long IsProcessRemoteSession:bool ProcessRemoteSessionDeviceName:string ProcessRemoteSessionIP:string",
    ),
    (
        "DeviceInfo",
        "Timestamp:datetime DeviceId:string DeviceName:string ClientVersion:string PublicIP:string OSArchitecture:string OSPlatform:string OSBuild:long IsAzureADJoined:bool JoinType:string AadDeviceId:string LoggedOnUsers:dynamic RegistryDeviceTag:string OSVersion:string MachineGroup:string ReportId:long OnboardingStatus:string AdditionalFields:dynamic DeviceCategory:string DeviceType:string DeviceSubtype:string Model:string Vendor:string OSDistribution:string OSVersionInfo:string MergedDeviceIds:dynamic MergedToDeviceId:string IsInternetFacing:bool SensorHealthState:string IsExcluded:bool ExclusionReason:string ExposureLevel:string AssetValue:string DeviceManualTags:string DeviceDynamicTags:string ConnectivityType:string HostDeviceId:string AzureResourceId:string AwsResourceName:string GcpFullResourceName:string",
    ),
    (
        "DeviceNetworkEvents",
        "Timestamp:datetime DeviceId:string DeviceName:string ActionType:string RemoteIP:string RemotePort:int RemoteUrl:string LocalIP:string LocalPort:int Protocol:string LocalIPType:string RemoteIPType:string InitiatingProcessSHA1:string InitiatingProcessSHA256:string InitiatingProcessMD5:string InitiatingProcessFileName:string InitiatingProcessFileSize:long InitiatingProcessVersionInfoCompanyName:string InitiatingProcessVersionInfoProductName:string InitiatingProcessVersionInfoProductVersion:string InitiatingProcessVersionInfoInternalFileName:string InitiatingProcessVersionInfoOriginalFileName:string InitiatingProcessVersionInfoFileDescription:string InitiatingProcessId:long InitiatingProcessCommandLine:string InitiatingProcessCreationTime:datetime InitiatingProcessFolderPath:string InitiatingProcessParentFileName:string InitiatingProcessParentId:long InitiatingProcessParentCreationTime:datetime InitiatingProcessAccountDomain:string InitiatingProcessAccountName:string InitiatingProcessAccountSid:string InitiatingProcessAccountUpn:string InitiatingProcessAccountObjectId:string InitiatingProcessIntegrityLevel:string InitiatingProcessTokenElevation:string ReportId:long AppGuardContainerId:string AdditionalFields:dynamic InitiatingProcessSessionId:long IsInitiatingProcessRemoteSession:bool InitiatingProcessRemoteSessionDeviceName:string InitiatingProcessRemoteSessionIP:string",
    ),
    (
        "DeviceNetworkInfo",
        "Timestamp:datetime DeviceId:string DeviceName:string NetworkAdapterName:string MacAddress:string NetworkAdapterType:string NetworkAdapterStatus:string TunnelType:string ConnectedNetworks:dynamic DnsAddresses:dynamic IPv4Dhcp:string IPv6Dhcp:string DefaultGateways:dynamic IPAddresses:dynamic ReportId:long NetworkAdapterVendor:string",
    ),
    (
        "DeviceProcessEvents",
        "Timestamp:datetime DeviceId:string DeviceName:string ActionType:string FileName:string FolderPath:string SHA1:string SHA256:string MD5:string FileSize:long ProcessVersionInfoCompanyName:string ProcessVersionInfoProductName:string ProcessVersionInfoProductVersion:string ProcessVersionInfoInternalFileName:string ProcessVersionInfoOriginalFileName:string ProcessVersionInfoFileDescription:string ProcessId:long ProcessCommandLine:string ProcessIntegrityLevel:string ProcessTokenElevation:string ProcessCreationTime:datetime AccountDomain:string AccountName:string AccountSid:string AccountUpn:string AccountObjectId:string LogonId:long InitiatingProcessAccountDomain:string InitiatingProcessAccountName:string InitiatingProcessAccountSid:string InitiatingProcessAccountUpn:string InitiatingProcessAccountObjectId:string InitiatingProcessLogonId:long InitiatingProcessIntegrityLevel:string InitiatingProcessTokenElevation:string InitiatingProcessSHA1:string InitiatingProcessSHA256:string InitiatingProcessMD5:string InitiatingProcessFileName:string InitiatingProcessFileSize:long InitiatingProcessVersionInfoCompanyName:string InitiatingProcessVersionInfoProductName:string InitiatingProcessVersionInfoProductVersion:string InitiatingProcessVersionInfoInternalFileName:string InitiatingProcessVersionInfoOriginalFileName:string InitiatingProcessVersionInfoFileDescription:string InitiatingProcessId:long InitiatingProcessCommandLine:string InitiatingProcessCreationTime:datetime InitiatingProcessFolderPath:string InitiatingProcessParentId:long InitiatingProcessParentFileName:string InitiatingProcessParentCreationTime:datetime InitiatingProcessSignerType:string InitiatingProcessSignatureStatus:string ReportId:long AppGuardContainerId:string AdditionalFields:dynamic InitiatingProcessSessionId:long IsInitiatingProcessRemoteSession:bool InitiatingProcessRemoteSessionDeviceName:string InitiatingProcessRemoteSessionIP:string CreatedProcessSessionId:long IsProcessRemoteSession:bool ProcessRemoteSessionDeviceName:string ProcessRemoteSessionIP:string",
    ),
    (
        "DeviceFileEvents",
        "Timestamp:datetime DeviceId:string DeviceName:string ActionType:string FileName:string FolderPath:string SHA1:string SHA256:string MD5:string FileOriginUrl:string FileOriginReferrerUrl:string FileOriginIP:string PreviousFolderPath:string PreviousFileName:string FileSize:long InitiatingProcessAccountDomain:string InitiatingProcessAccountName:string InitiatingProcessAccountSid:string InitiatingProcessAccountUpn:string InitiatingProcessAccountObjectId:string InitiatingProcessMD5:string InitiatingProcessSHA1:string InitiatingProcessSHA256:string InitiatingProcessFolderPath:string InitiatingProcessFileName:string InitiatingProcessFileSize:long InitiatingProcessVersionInfoCompanyName:string InitiatingProcessVersionInfoProductName:string InitiatingProcessVersionInfoProductVersion:string InitiatingProcessVersionInfoInternalFileName:string InitiatingProcessVersionInfoOriginalFileName:string InitiatingProcessVersionInfoFileDescription:string InitiatingProcessId:long InitiatingProcessCommandLine:string InitiatingProcessCreationTime:datetime InitiatingProcessIntegrityLevel:string InitiatingProcessTokenElevation:string InitiatingProcessParentId:long InitiatingProcessParentFileName:string InitiatingProcessParentCreationTime:datetime RequestProtocol:string RequestSourceIP:string RequestSourcePort:int RequestAccountName:string RequestAccountDomain:string RequestAccountSid:string ShareName:string SensitivityLabel:string SensitivitySubLabel:string IsAzureInfoProtectionApplied:bool ReportId:long AppGuardContainerId:string AdditionalFields:dynamic InitiatingProcessSessionId:long IsInitiatingProcessRemoteSession:bool InitiatingProcessRemoteSessionDeviceName:string InitiatingProcessRemoteSessionIP:string",
    ),
    (
        "DeviceRegistryEvents",
        "Timestamp:datetime DeviceId:string DeviceName:string ActionType:string RegistryKey:string RegistryValueType:string RegistryValueName:string RegistryValueData:string PreviousRegistryKey:string PreviousRegistryValueName:string PreviousRegistryValueData:string InitiatingProcessAccountDomain:string InitiatingProcessAccountName:string InitiatingProcessAccountSid:string InitiatingProcessAccountUpn:string InitiatingProcessAccountObjectId:string InitiatingProcessSHA1:string InitiatingProcessSHA256:string InitiatingProcessMD5:string InitiatingProcessFileName:string InitiatingProcessFileSize:long InitiatingProcessVersionInfoCompanyName:string InitiatingProcessVersionInfoProductName:string InitiatingProcessVersionInfoProductVersion:string InitiatingProcessVersionInfoInternalFileName:string InitiatingProcessVersionInfoOriginalFileName:string InitiatingProcessVersionInfoFileDescription:string InitiatingProcessId:long InitiatingProcessCommandLine:string InitiatingProcessCreationTime:datetime InitiatingProcessFolderPath:string InitiatingProcessParentId:long InitiatingProcessParentFileName:string InitiatingProcessParentCreationTime:datetime InitiatingProcessIntegrityLevel:string InitiatingProcessTokenElevation:string ReportId:long AppGuardContainerId:string InitiatingProcessSessionId:long IsInitiatingProcessRemoteSession:bool InitiatingProcessRemoteSessionDeviceName:string InitiatingProcessRemoteSessionIP:string",
    ),
    (
        "DeviceLogonEvents",
        "Timestamp:datetime DeviceId:string DeviceName:string ActionType:string LogonType:string AccountDomain:string AccountName:string AccountSid:string Protocol:string FailureReason:string IsLocalAdmin:bool LogonId:long RemoteDeviceName:string RemoteIP:string RemoteIPType:string RemotePort:int InitiatingProcessAccountDomain:string InitiatingProcessAccountName:string InitiatingProcessAccountSid:string InitiatingProcessAccountUpn:string InitiatingProcessAccountObjectId:string InitiatingProcessIntegrityLevel:string InitiatingProcessTokenElevation:string InitiatingProcessSHA1:string InitiatingProcessSHA256:string InitiatingProcessMD5:string InitiatingProcessFileName:string InitiatingProcessFileSize:long InitiatingProcessVersionInfoCompanyName:string InitiatingProcessVersionInfoProductName:string InitiatingProcessVersionInfoProductVersion:string InitiatingProcessVersionInfoInternalFileName:string InitiatingProcessVersionInfoOriginalFileName:string InitiatingProcessVersionInfoFileDescription:string InitiatingProcessId:long InitiatingProcessCommandLine:string InitiatingProcessCreationTime:datetime InitiatingProcessFolderPath:string InitiatingProcessParentId:long InitiatingProcessParentFileName:string InitiatingProcessParentCreationTime:datetime ReportId:long AppGuardContainerId:string AdditionalFields:dynamic InitiatingProcessSessionId:long IsInitiatingProcessRemoteSession:bool InitiatingProcessRemoteSessionDeviceName:string InitiatingProcessRemoteSessionIP:string",
    ),
    (
        "DeviceImageLoadEvents",
        "Timestamp:datetime DeviceId:string DeviceName:string ActionType:string FileName:string FolderPath:string SHA1:string SHA256:string MD5:string FileSize:long InitiatingProcessAccountDomain:string InitiatingProcessAccountName:string InitiatingProcessAccountSid:string InitiatingProcessAccountUpn:string InitiatingProcessAccountObjectId:string InitiatingProcessIntegrityLevel:string InitiatingProcessTokenElevation:string InitiatingProcessSHA1:string InitiatingProcessSHA256:string InitiatingProcessMD5:string InitiatingProcessFileName:string InitiatingProcessFileSize:long InitiatingProcessVersionInfoCompanyName:string InitiatingProcessVersionInfoProductName:string InitiatingProcessVersionInfoProductVersion:string InitiatingProcessVersionInfoInternalFileName:string InitiatingProcessVersionInfoOriginalFileName:string InitiatingProcessVersionInfoFileDescription:string InitiatingProcessId:long InitiatingProcessCommandLine:string InitiatingProcessCreationTime:datetime InitiatingProcessFolderPath:string InitiatingProcessParentId:long InitiatingProcessParentFileName:string InitiatingProcessParentCreationTime:datetime ReportId:long AppGuardContainerId:string InitiatingProcessSessionId:long IsInitiatingProcessRemoteSession:bool InitiatingProcessRemoteSessionDeviceName:string InitiatingProcessRemoteSessionIP:string",
    ),
];

/// The full column schema of a Device* table (name matched exactly, as Kusto does).
pub fn columns(table: &str) -> Option<Vec<Column>> {
    let (_, spec) = SCHEMAS.iter().find(|(name, _)| *name == table)?;
    Some(
        spec.split_whitespace()
            .filter_map(|c| {
                let (name, ty) = c.split_once(':')?;
                Some(Column::new(name, KustoType::from_name(ty)?))
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_device_table_has_a_schema_with_timestamp_first() {
        for t in DEVICE_TABLES {
            let cols = columns(t).unwrap();
            assert_eq!(
                cols[0],
                Column::new("Timestamp", KustoType::DateTime),
                "{t}"
            );
            assert!(cols.iter().any(|c| c.name == "DeviceId"), "{t}");
            let spec = SCHEMAS.iter().find(|(n, _)| n == t).unwrap().1;
            assert_eq!(
                cols.len(),
                spec.split_whitespace().count(),
                "a type failed to parse in {t}"
            );
        }
        assert_eq!(
            columns("DeviceInfo")
                .unwrap()
                .iter()
                .find(|c| c.name == "LoggedOnUsers")
                .unwrap()
                .ty,
            KustoType::Object
        );
        assert!(columns("EmailEvents").is_none());
    }
}
