with source as (
    select * from {{ source('raw', 'patients') }}
),

renamed as (
    select
        coalesce(PatientID, '') || '^' || coalesce(IssuerOfPatientID, '') as patient_key,
        PatientID as patient_id,
        IssuerOfPatientID as issuer_of_patient_id,
        PatientName as patient_name,
        {{ dicom_date('PatientBirthDate') }} as patient_birth_date,
        PatientSex as patient_sex,
        OtherPatientIDs as other_patient_ids,
        EthnicGroup as ethnic_group,
        PatientComments as patient_comments,
        PatientSpeciesDescription as patient_species_description,
        PatientIdentityRemoved as patient_identity_removed,
        source_key,
        batch_id,
        ingested_at
    from source
),

deduplicated as (
    select *
    from renamed
    qualify row_number() over (partition by patient_key order by ingested_at desc, source_key) = 1
)

select * from deduplicated
