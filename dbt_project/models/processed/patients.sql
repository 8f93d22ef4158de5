with patients as (
    select * from {{ ref('stg_patients') }}
),

deidentified as (
    select
        {{ hmac_sha256('patient_key') }} as patient_pseudo_id,
        patient_sex,
        patient_species_description,
        'YES' as patient_identity_removed,
        '{{ var("deid_method_codes") }}' as deidentification_method_codes
    from patients
)

select * from deidentified
